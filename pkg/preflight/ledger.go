package preflight

import (
	"context"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// aclRead is the bit of the READ operation in a Metadata response's
// authorized operations (KIP-430: AclOperation READ = 3).
const aclRead = 1 << 3

// LedgerTopic checks that the run ledger's topic can be read (a run reads
// the history of its file) and written (its records) or, if it does not
// exist, that it could be created with configs and one partition, as the
// ledger creates it. Nothing is created.
func LedgerTopic(ctx context.Context, cl *kgo.Client, topic string, replicationFactor int16, configs map[string]string) error {
	return checkTopic(ctx, cl, topic, aclRead|aclWrite, 1, replicationFactor, configs)
}

// rights names the operations of the bits in ops, for a refusal.
func rights(ops int32) string {
	var out []string
	if ops&aclRead != 0 {
		out = append(out, "read")
	}
	if ops&aclWrite != 0 {
		out = append(out, "write to")
	}
	return strings.Join(out, " or ")
}
