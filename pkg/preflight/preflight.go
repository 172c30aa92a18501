// Package preflight checks, without publishing anything, that a run would
// find what it needs: a readable gzip file, and a topic it may write to or
// create. The chart's `helm test` hook runs these checks, so an operator
// learns of a wrong path, a missing PVC or a missing ACL at install time,
// not at the first scheduled run.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// sampleBytes is how much decompressed content File reads: enough to prove
// that the deflate data after the header is sound, cheap on a 700 MB file.
const sampleBytes = 1 << 20

// File checks that path is a readable gzip file whose first sampleBytes
// decompress. A failure is a *source.InputError, as it would be in a run.
func File(path string) error {
	f, err := source.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(io.Discard, f, sampleBytes); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// aclWrite is the bit of the WRITE operation in a Metadata response's
// authorized operations (KIP-430: bit n is AclOperation n, WRITE = 4).
const aclWrite = 1 << 4

// notReported is the authorized-operations value of a broker that did not
// compute them.
const notReported = math.MinInt32

// Topic checks that topic can be written to or, if it does not exist, that
// it could be created with the given settings: the brokers validate the
// creation (CreateTopics with validateOnly), and nothing is created.
func Topic(ctx context.Context, cl *kgo.Client, topic string, partitions int32, replicationFactor int16, configs map[string]string) error {
	return checkTopic(ctx, cl, topic, aclWrite, partitions, replicationFactor, configs)
}

// checkTopic checks that this client has the rights need (AclOperation
// bits) on topic or, if it does not exist, that it could be created.
func checkTopic(ctx context.Context, cl *kgo.Client, topic string, need int32, partitions int32, replicationFactor int16, configs map[string]string) error {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	req.IncludeTopicAuthorizedOperations = true
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("describe topic %s: the broker answered for %d topics", topic, len(resp.Topics))
	}
	t := resp.Topics[0]
	switch err := kerr.ErrorForCode(t.ErrorCode); {
	case err == nil:
		if ops := t.AuthorizedOperations; ops != notReported && ops&need != need {
			return fmt.Errorf("topic %s exists but this client is not authorized to %s it", topic, rights(need&^ops))
		}
		return nil
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		return validateCreate(ctx, cl, topic, partitions, replicationFactor, configs)
	default:
		return fmt.Errorf("describe topic %s: %w", topic, err)
	}
}

func validateCreate(ctx context.Context, cl *kgo.Client, topic string, partitions int32, replicationFactor int16, configs map[string]string) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.ValidateOnly = true
	req.TimeoutMillis = 30_000
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic = topic
	rt.NumPartitions = partitions
	rt.ReplicationFactor = replicationFactor
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		rt.Configs = append(rt.Configs, c)
	}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("topic %s does not exist; validate its creation: %w", topic, err)
	}
	if len(resp.Topics) != 1 {
		return fmt.Errorf("topic %s does not exist; validate its creation: the broker answered for %d topics", topic, len(resp.Topics))
	}
	r := resp.Topics[0]
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		msg := ""
		if r.ErrorMessage != nil && *r.ErrorMessage != "" {
			msg = " (" + *r.ErrorMessage + ")"
		}
		return fmt.Errorf("topic %s does not exist and cannot be created: %w%s", topic, err, msg)
	}
	return nil
}
