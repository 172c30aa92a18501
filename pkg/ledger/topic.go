package ledger

import "maps"

// TopicConfigs returns the settings of a ledger topic the producer
// creates, for a preflight that validates its creation.
func TopicConfigs() map[string]string { return maps.Clone(topicConfigs) }
