package config

import "strconv"

// checkMaxMessageBytes refuses a batch-max-bytes above the
// max.message.bytes that topic-config gives the topics the producer
// creates: such a topic would refuse every full batch, so the run would
// fail after creating it, leaving it empty. An existing topic's own limit
// is checked when its stream starts (producer.ErrBatchTooLarge). A value that
// is not a number is left to the broker to refuse.
func (c *Config) checkMaxMessageBytes() error {
	v, ok := c.TopicConfigs["max.message.bytes"]
	if !ok {
		return nil
	}
	limit, err := strconv.ParseInt(v, 10, 64)
	if err != nil || int64(c.BatchMaxBytes) <= limit {
		return nil
	}
	return c.bad("batch-max-bytes", c.BatchMaxBytes, "is more than max.message.bytes %d in topic-config (from %s): a topic created so would refuse every full batch; lower batch-max-bytes or raise max.message.bytes",
		limit, c.from("topic-config"))
}
