// Package rules holds the Falco rules for the kmodguard event source,
// kmodguard_rules.yaml, embedded so that tools can ship and lint them.
package rules

import _ "embed"

// YAML is the content of kmodguard_rules.yaml.
//
//go:embed kmodguard_rules.yaml
var YAML []byte
