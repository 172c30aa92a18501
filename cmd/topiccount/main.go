// Command topiccount prints how many records each topic holds: the sum over
// its partitions of the end offset minus the start offset
// (kafkatest.RecordCount, the one count the demo, the benchmark and the
// tests use). Exit status 1 if a topic is missing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

func main() {
	brokers := flag.String("brokers", envOr("KAFKA_BROKERS", "localhost:9092"), "comma-separated seed brokers (env KAFKA_BROKERS)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "Usage: topiccount [--brokers LIST] TOPIC...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...))
	if err != nil {
		fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status := 0
	for _, topic := range flag.Args() {
		n, err := kafkatest.RecordCount(ctx, adm, topic)
		if err != nil {
			fmt.Fprintf(os.Stderr, "topiccount: %v\n", err)
			status = 1
			continue
		}
		fmt.Printf("%s\t%d\n", topic, n)
	}
	os.Exit(status)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "topiccount:", err)
	os.Exit(1)
}
