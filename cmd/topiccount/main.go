// Command topiccount prints how many records each topic holds: the sum over
// its partitions of the end offset minus the start offset, as Kafka's
// GetOffsetShell would give. Exit status 1 if a topic is missing.
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
	starts, err := adm.ListStartOffsets(ctx, flag.Args()...)
	if err != nil {
		fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, flag.Args()...)
	if err != nil {
		fatal(err)
	}
	status := 0
	for _, topic := range flag.Args() {
		var total int64
		var terr error
		ends.Each(func(o kadm.ListedOffset) {
			if o.Topic != topic {
				return
			}
			if o.Err != nil {
				terr = o.Err
				return
			}
			s, _ := starts.Lookup(topic, o.Partition)
			total += o.Offset - s.Offset
		})
		if _, ok := ends[topic]; !ok && terr == nil {
			terr = fmt.Errorf("no such topic")
		}
		if terr != nil {
			fmt.Fprintf(os.Stderr, "topiccount: %s: %v\n", topic, terr)
			status = 1
			continue
		}
		fmt.Printf("%s\t%d\n", topic, total)
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
