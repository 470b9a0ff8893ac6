package companion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/kmodguard/kmodguard/companion/proto"
)

// ServeArgs are the arguments of kmodguard that start the companion.
var ServeArgs = []string{"enforcer", "serve-companion"}

// LaunchConfig configures Launch.
type LaunchConfig struct {
	// Path is the kmodguard binary.
	Path string
	// Args are its arguments; ServeArgs when nil.
	Args []string
	// Env is added to the companion's environment (which is otherwise the
	// caller's).
	Env []string
	// StartTimeout bounds the handshake; 10s when zero.
	StartTimeout time.Duration
	// Logger receives the companion's log lines and go-plugin's own. When
	// nil, warnings and errors go to stderr as JSON.
	Logger hclog.Logger
	// Stderr receives what the companion writes to os.Stderr once served;
	// os.Stderr when nil. (Its stdout belongs to go-plugin and is discarded.)
	Stderr io.Writer
}

// Client is a connection to a companion: launched (Launch), reattached
// (Attach) or dialed on a Unix socket (DialSocket). Its Enforcer methods call
// the companion.
type Client struct {
	Enforcer
	pc       *plugin.Client        // launched or reattached
	rpc      plugin.ClientProtocol // pc's connection
	attached bool                  // pc was reattached: Close must not stop it
	conn     *grpc.ClientConn      // dialed
}

func defaultLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "kmodguard-companion",
		Level:      hclog.Warn,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// Launch starts the companion as a child process and connects to it over
// go-plugin's gRPC transport with AutoMTLS.
func Launch(cfg LaunchConfig) (*Client, error) {
	if cfg.Path == "" {
		return nil, errors.New("companion: no kmodguard binary to launch")
	}
	if _, err := exec.LookPath(cfg.Path); err != nil {
		return nil, fmt.Errorf("companion: %w", err)
	}
	args := cfg.Args
	if args == nil {
		args = ServeArgs
	}
	cmd := exec.Command(cfg.Path, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	timeout := cfg.StartTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = defaultLogger()
	}
	stderr := cfg.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginMap,
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     timeout,
		Logger:           logger,
		SyncStdout:       io.Discard,
		SyncStderr:       stderr,
	})
	return connect(pc, cfg.Path)
}

// Attach connects to a companion that is already running, from the
// ReattachConfig of the client that launched it. go-plugin cannot reattach
// with AutoMTLS, so the companion must have been served without it (as the
// Unix-socket mode is); Close on the returned client does not stop it.
func Attach(rc *plugin.ReattachConfig, logger hclog.Logger) (*Client, error) {
	if rc == nil {
		return nil, errors.New("companion: no reattach configuration")
	}
	if logger == nil {
		logger = defaultLogger()
	}
	pc := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		Plugins:          PluginMap,
		Reattach:         rc,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
	})
	c, err := connect(pc, rc.Addr.String())
	if err != nil {
		return nil, err
	}
	c.attached = true
	return c, nil
}

func connect(pc *plugin.Client, what string) (*Client, error) {
	rpc, err := pc.Client()
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("companion %s: start: %w", what, err)
	}
	raw, err := rpc.Dispense(PluginName)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("companion %s: %w", what, err)
	}
	e, ok := raw.(Enforcer)
	if !ok {
		pc.Kill()
		return nil, fmt.Errorf("companion %s: dispensed %T, not an Enforcer", what, raw)
	}
	return &Client{Enforcer: e, pc: pc, rpc: rpc}, nil
}

// DialSocket connects to a companion served on the Unix socket at path (see
// ServeSocket). The socket's file mode is its access control.
func DialSocket(ctx context.Context, path string) (*Client, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("companion socket: %w", err)
	}
	conn, err := grpc.Dial("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("companion socket %s: %w", path, err)
	}
	c := &Client{Enforcer: NewGRPCClient(conn), conn: conn}
	// Fail now, not on the first call, when nothing listens there.
	conn.Connect()
	if _, err := c.Status(ctx); err != nil && !errors.Is(err, ErrUnavailable) {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Exited reports whether a launched companion's process has exited, or a
// dialed connection was closed.
func (c *Client) Exited() bool {
	if c.pc != nil {
		return c.pc.Exited()
	}
	return c.conn == nil
}

// ReattachConfig returns what Attach needs to reach a launched companion,
// or nil.
func (c *Client) ReattachConfig() *plugin.ReattachConfig {
	if c.pc == nil {
		return nil
	}
	return c.pc.ReattachConfig()
}

// Close disconnects. A launched companion is asked to exit (and killed after
// a grace period); an attached or dialed one keeps running. The guard it
// loaded stays in force through its pins either way.
func (c *Client) Close() error {
	if c.pc != nil && c.attached {
		// Kill, and even the go-plugin client's Close, ask the companion to
		// shut down: only drop the connection.
		if g, ok := c.rpc.(*plugin.GRPCClient); ok {
			return g.Conn.Close()
		}
		return nil
	}
	if c.pc != nil {
		c.pc.Kill()
		return nil
	}
	if c.conn != nil {
		err := c.conn.Close()
		c.conn = nil
		return err
	}
	return nil
}

// Serve runs the companion in a process started by Launch: it performs the
// go-plugin handshake on stdout and serves impl until the client goes away.
// Nothing else may write to stdout in that process.
func Serve(impl Enforcer, logger hclog.Logger) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins:         plugin.PluginSet{PluginName: &EnforcerPlugin{Impl: impl}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          logger,
	})
}

// ServeSocket serves impl on a Unix socket at path, mode 0600, until ctx
// ends. A stale socket at path is replaced; any other file there is an
// error.
func ServeSocket(ctx context.Context, path string, impl Enforcer) error {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("companion socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("companion socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("companion socket: %w", err)
	}
	// Connecting needs write permission on the socket: under the usual umask
	// nobody but the owner has it from the start, and 0600 makes it explicit.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("companion socket: %w", err)
	}
	srv := grpc.NewServer()
	pb.RegisterEnforcerServer(srv, &grpcServer{impl: impl})
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.Stop()
		case <-done:
		}
	}()
	err = srv.Serve(ln)
	close(done)
	os.Remove(path)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("companion socket %s: %w", path, err)
	}
	return nil
}
