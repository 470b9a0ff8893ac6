package plugin

import "errors"

// openLive will start the BPF sensor (package bpf) once it lands.
func (p *Plugin) openLive() (*liveInstance, error) {
	return nil, errors.New("start the live sensor: not built into this plugin yet; use open_params replay:FILE")
}
