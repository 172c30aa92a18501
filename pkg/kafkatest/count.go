package kafkatest

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
)

// RecordCount is the number of records topic holds: the sum over its
// partitions of the end offset minus the start offset. It is exact for
// producers without transactions (a commit marker takes an offset too).
// A missing topic or a partition error is an error.
func RecordCount(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	if _, ok := ends[topic]; !ok {
		return 0, fmt.Errorf("topic %s: no such topic", topic)
	}
	var n int64
	err = ends.Error()
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("topic %s: %w", topic, err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Topic != topic {
			return
		}
		s, _ := starts.Lookup(topic, o.Partition)
		n += o.Offset - s.Offset
	})
	return n, nil
}
