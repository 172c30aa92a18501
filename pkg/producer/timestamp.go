package producer

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// timestampConfigs are the topic settings by which a broker judges a
// record's timestamp against its own clock. Since Kafka 3.6 the two bounds
// replace message.timestamp.difference.max.ms; Kafka 4 refuses a record
// stamped more than an hour ahead by default (after.max.ms 3600000).
var timestampConfigs = []string{"message.timestamp.after.max.ms", "message.timestamp.before.max.ms"}

// describeTimestampBounds returns the topic's timestamp bounds as
// "name=value" pairs, for the message of an INVALID_TIMESTAMP refusal:
// read when the stream starts, since the refusal comes mid-file to a
// sender that must not wait on another request. What cannot be read is
// said so.
func (s *Stream) describeTimestampBounds(ctx context.Context) string {
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeTopic
	rr.ResourceName = s.topic
	rr.ConfigNames = timestampConfigs
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(ctx, s.cl)
	if err == nil && len(resp.Resources) == 1 {
		err = kerr.ErrorForCode(resp.Resources[0].ErrorCode)
	}
	if err != nil || len(resp.Resources) != 1 {
		s.log.Debug("cannot read the topic's timestamp bounds", zap.NamedError("err", err))
		return strings.Join(timestampConfigs, " and ") + " (not readable)"
	}
	var out []string
	for _, name := range timestampConfigs {
		v := "not reported"
		for _, c := range resp.Resources[0].Configs {
			if c.Name == name && c.Value != nil {
				v = *c.Value
			}
		}
		out = append(out, name+"="+v)
	}
	return strings.Join(out, " and ")
}

// timestampRefused is the error that stops the stream when the broker
// refuses a batch's timestamp: every batch is stamped by this machine's
// clock, so every batch would be refused, and each failure would take a
// new producer ID. It names the clock and the topic settings to check.
func (s *Stream) timestampRefused(b *batch, now time.Time, err error) error {
	return fmt.Errorf("%w: topic %s refuses records stamped by this machine's clock (the batch at %s, the clock now %s); "+
		"the broker accepts a record's timestamp only within the topic's %s of its own clock: "+
		"check this machine's clock (NTP) against the brokers', or those settings of the topic",
		err, s.topic, b.created.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano), s.timestampBounds)
}
