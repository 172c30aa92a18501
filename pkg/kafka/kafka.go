// Package kafka is the producer's connection to a Kafka cluster: Conn, one
// franz-go client shared by the files of a run and the run ledger,
// configured for TLS and SASL (Security), and the admin steps before a file
// is produced (reach a broker, create the topic). Producing itself is the
// engine's (package producer), which sends its requests through
// Conn.Client.
//
// It also holds what the engine, the ledger, the configuration and the run
// know of Kafka alike, so that none of them imports another: the
// compression codec names, the delivery count of a stream and its offset
// ranges, one topic metadata lookup, which broker errors no retry can fix,
// and one backoff.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Codecs maps the compression names of the configuration to franz-go codecs.
var Codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

// CompressionNames returns the keys of Codecs, sorted.
func CompressionNames() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range Codecs {
			if !yield(k) {
				return
			}
		}
	})
}

// CheckCompression returns an error quoting name unless it is a key of Codecs.
func CheckCompression(name string) error {
	if _, ok := Codecs[name]; !ok {
		return fmt.Errorf("compression %q is not one of %s", name, strings.Join(CompressionNames(), ", "))
	}
	return nil
}

// ErrUndelivered is returned by a stream's Finish when some codes were not
// acknowledged.
var ErrUndelivered = errors.New("codes not delivered")

// Delivery counts the fate of a stream's codes.
type Delivery struct {
	Sent      int64 // handed to the stream
	Delivered int64 // acknowledged by the broker
	Failed    int64 // failed, or not acknowledged when Finish returned
}

// Range is the span of offsets a stream's acknowledged records take in one
// partition: First and Last inclusive. Records of others may lie between.
type Range struct {
	Partition int32 `json:"partition"`
	First     int64 `json:"first"`
	Last      int64 `json:"last"`
}

// Backoff is the wait before the attempt that follows attempts failed ones:
// 100ms, doubling up to 1s.
func Backoff(attempts int) time.Duration {
	return min(100*time.Millisecond<<min(max(attempts, 1)-1, 4), time.Second)
}

// TopicMetadata asks the brokers through cl for the partitions, leaders and
// ID of topic. It asks them directly: franz-go's admin client answers from a
// cache that still holds a topic just created as unknown for a few seconds.
func TopicMetadata(ctx context.Context, cl *kgo.Client, topic string) (*kmsg.MetadataResponseTopic, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", topic, err)
	}
	if len(resp.Topics) != 1 {
		return nil, fmt.Errorf("metadata of topic %s: %d topics in the answer", topic, len(resp.Topics))
	}
	t := &resp.Topics[0]
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return nil, fmt.Errorf("metadata of topic %s: %w", topic, err)
	}
	if len(t.Partitions) == 0 {
		return nil, fmt.Errorf("metadata of topic %s: no partitions", topic)
	}
	return t, nil
}
