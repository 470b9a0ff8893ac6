// Command plugin is libkmodguard.so, the kmodguard Falco plugin. Build it
// with `make plugin` (go build -buildmode=c-shared); the logic lives in
// package plugin.
package main

import (
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/plugins"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/plugins/extractor"
	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk/plugins/source"

	"github.com/kmodguard/kmodguard/plugin"
	// plugin_get_metrics, which the SDK does not export.
	_ "github.com/kmodguard/kmodguard/plugin/metrics"
)

func init() {
	plugins.SetFactory(func() plugins.Plugin {
		p := plugin.New()
		source.Register(p)
		extractor.Register(p)
		return p
	})
}

func main() {}
