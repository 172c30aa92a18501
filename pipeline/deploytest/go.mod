module github.com/couponpipeline/deploytest

go 1.26

require (
	github.com/compose-spec/compose-go/v2 v2.16.2 // indirect
	github.com/moby/buildkit v0.31.2 // indirect
	github.com/moby/patternmatcher v0.6.1 // indirect
)
