package companion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kmodguard/kmodguard/allowlist"
	pb "github.com/kmodguard/kmodguard/companion/proto"
	"github.com/kmodguard/kmodguard/event"
)

// maxAllowlistBytes bounds the allowlist a client may send: far above any
// real list (a digest entry is about 200 bytes; every module of a Debian
// kernel with both digests is under 1 MiB), and below gRPC's default 4 MiB
// message limit, which refuses anything larger before it reaches us.
const maxAllowlistBytes = 3 << 20

// maxSignatureBytes bounds the detached signature (base64 of 64 bytes and a
// newline: 89).
const maxSignatureBytes = 1024

// EnforcerPlugin is the go-plugin plugin of the companion. A server sets
// Impl; a client leaves it nil.
type EnforcerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl Enforcer
}

var _ plugin.GRPCPlugin = (*EnforcerPlugin)(nil)

// GRPCServer registers the service of p.Impl on s.
func (p *EnforcerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("companion: no enforcer to serve")
	}
	pb.RegisterEnforcerServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns an Enforcer that calls the service over c.
func (p *EnforcerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewGRPCClient(c), nil
}

// grpcServer adapts an Enforcer to the generated service.
type grpcServer struct {
	pb.UnimplementedEnforcerServer
	impl Enforcer
}

// serverError gives err the status code its client side maps back.
func serverError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrUntrusted):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, allowlist.ErrRollback), errors.Is(err, allowlist.ErrExpired):
		return status.Error(codes.InvalidArgument, fmt.Errorf("%w: %w", ErrInvalidAllowlist, err).Error())
	case errors.Is(err, ErrInvalidAllowlist):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

func (s *grpcServer) Apply(ctx context.Context, req *pb.ApplyRequest) (*pb.ApplyResponse, error) {
	if len(req.GetAllowlist()) > maxAllowlistBytes {
		return nil, serverError(fmt.Errorf("%w: %d bytes, more than the %d accepted", ErrInvalidAllowlist, len(req.GetAllowlist()), maxAllowlistBytes))
	}
	source := req.GetSource()
	if source == "" {
		source = "allowlist"
	}
	if len(req.GetSignature()) > maxSignatureBytes {
		return nil, serverError(fmt.Errorf("%w: a signature of %d bytes, more than the %d accepted", ErrInvalidAllowlist, len(req.GetSignature()), maxSignatureBytes))
	}
	// The signature stays with the document it came with: a companion
	// given a key verifies it over exactly these bytes (Enforcer.Apply).
	a, err := allowlist.ParseSigned(req.GetAllowlist(), req.GetSignature(), source)
	if err != nil {
		return nil, serverError(fmt.Errorf("%w: %w", ErrInvalidAllowlist, err))
	}
	res, err := s.impl.Apply(ctx, a)
	if err != nil {
		return nil, serverError(err)
	}
	return &pb.ApplyResponse{Generation: res.Generation, Entries: res.Entries, Mode: res.Mode}, nil
}

func (s *grpcServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	st, err := s.impl.Status(ctx)
	if err != nil {
		return nil, serverError(err)
	}
	return &pb.StatusResponse{
		Mode: st.Mode, Generation: st.Generation, Entries: st.Entries, Sealed: st.Sealed,
		PinDir: st.PinDir, Links: st.Links, Missing: st.Missing,
		Allowed: st.Allowed, Blocked: st.Blocked, Audited: st.Audited, LostEvents: st.LostEvents,
		Allowlist: st.Allowlist, MissingDecisions: st.MissingDecisions, Version: st.Version,
	}, nil
}

// subscribedKey is the header the server sends once its subscription is in
// place, so that the client's Decisions returns only when no later decision
// can be missed.
const subscribedKey = "kmodguard-subscribed"

func (s *grpcServer) Decisions(_ *pb.DecisionsRequest, stream pb.Enforcer_DecisionsServer) error {
	ctx := stream.Context()
	ch, err := s.impl.Decisions(ctx)
	if err != nil {
		return serverError(err)
	}
	if err := stream.SendHeader(metadata.Pairs(subscribedKey, "1")); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-ch:
			if !ok {
				return nil
			}
			p := toProto(m)
			if p == nil {
				continue
			}
			if err := stream.Send(p); err != nil {
				return err
			}
		}
	}
}

// toProto puts m on the wire. A Report travels as a Decision message whose
// op is the report's kind and whose verdict is "none" (Object its count or
// link id): the form every companion of protocol version 1 has sent, so
// that plugins and companions of different builds understand each other.
func toProto(m event.GuardMessage) *pb.Decision {
	var (
		p  *pb.Decision
		at time.Time
	)
	switch m := m.(type) {
	case event.Decision:
		at = m.Time
		p = &pb.Decision{
			Op: string(m.Op), Verdict: string(m.Verdict), Reason: m.Reason, Ret: m.Ret,
			Sha256: m.SHA256, Name: m.Name, ThisModuleName: m.ThisModuleName,
			NameMismatch: m.NameMismatch, Compressed: m.Compressed, Entry: m.Entry,
			Size: m.Size, Generation: m.Generation, Object: m.Object, Sealed: m.Sealed,
			Pid: m.Pid, Tid: m.Tid, Uid: m.UID, Comm: m.Comm,
		}
	case event.Report:
		at = m.Time
		p = &pb.Decision{
			Op: string(m.Kind), Verdict: event.VerdictNone, Reason: m.Reason, Object: m.Count,
			Pid: m.Pid, Tid: m.Pid, Uid: m.UID, Comm: m.Comm,
		}
		if m.Kind == event.ReportOverride {
			p.Object = uint64(m.LinkID)
		}
	default:
		return nil
	}
	if !at.IsZero() {
		p.TimeUnixNano = at.UnixNano()
	}
	return p
}

// fromProto reads a message of the stream back (see toProto).
func fromProto(p *pb.Decision) event.GuardMessage {
	var at time.Time
	if ns := p.GetTimeUnixNano(); ns != 0 {
		at = time.Unix(0, ns)
	}
	switch kind := event.ReportKind(p.GetOp()); kind {
	case event.ReportMissing, event.ReportOverride, event.ReportSkipped:
		r := event.Report{Time: at, Kind: kind, Reason: p.GetReason(), Pid: p.GetPid(), UID: p.GetUid(), Comm: p.GetComm()}
		if kind != event.ReportOverride {
			r.Count = p.GetObject()
		} else {
			r.LinkID = uint32(p.GetObject())
		}
		return r
	}
	return event.Decision{
		Time: at, Op: event.Op(p.GetOp()), Verdict: event.Verdict(p.GetVerdict()), Reason: p.GetReason(), Ret: p.GetRet(),
		SHA256: p.GetSha256(), Name: p.GetName(), ThisModuleName: p.GetThisModuleName(),
		NameMismatch: p.GetNameMismatch(), Compressed: p.GetCompressed(), Entry: p.GetEntry(),
		Size: p.GetSize(), Generation: p.GetGeneration(), Object: p.GetObject(), Sealed: p.GetSealed(),
		Pid: p.GetPid(), Tid: p.GetTid(), UID: p.GetUid(), Comm: p.GetComm(),
	}
}

// GRPCClient is an Enforcer that calls a companion over gRPC.
type GRPCClient struct {
	c pb.EnforcerClient
}

var _ Enforcer = (*GRPCClient)(nil)

// NewGRPCClient returns an Enforcer that calls the companion over conn.
func NewGRPCClient(conn grpc.ClientConnInterface) *GRPCClient {
	return &GRPCClient{c: pb.NewEnforcerClient(conn)}
}

// clientError maps a gRPC status back to the package's errors.
func clientError(call string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("companion %s: %w", call, err)
	}
	msg := st.Message()
	switch st.Code() {
	case codes.FailedPrecondition:
		// The message already starts with "enforcer unavailable".
		return fmt.Errorf("companion %s: %w", call, wrapped{ErrUnavailable, msg})
	case codes.InvalidArgument:
		return fmt.Errorf("companion %s: %w", call, wrapped{ErrInvalidAllowlist, msg})
	case codes.PermissionDenied:
		return fmt.Errorf("companion %s: %w", call, wrapped{ErrUntrusted, msg})
	case codes.Unavailable, codes.Canceled:
		return fmt.Errorf("companion %s: %w: %s", call, ErrDisconnected, msg)
	default:
		return fmt.Errorf("companion %s: %s", call, msg)
	}
}

// wrapped is an error whose text came over the wire and already names its
// sentinel; it keeps errors.Is working without repeating the sentinel text.
type wrapped struct {
	sentinel error
	msg      string
}

func (w wrapped) Error() string { return w.msg }
func (w wrapped) Unwrap() error { return w.sentinel }

// Apply sends a to the companion as YAML; the companion parses and validates
// it again before it applies it. An allowlist that came with a signature
// (loaded with a key: allowlist.LoadVerified) goes as the document it was
// parsed from, with that signature, for a companion that requires one;
// another goes as allowlist.Marshal writes it, unsigned.
func (c *GRPCClient) Apply(ctx context.Context, a *allowlist.Allowlist) (Applied, error) {
	if a == nil {
		return Applied{}, errors.New("companion apply: no allowlist")
	}
	data, sig := a.Signed()
	if len(data) == 0 || len(sig) == 0 {
		var err error
		if data, err = allowlist.Marshal(a); err != nil {
			return Applied{}, fmt.Errorf("companion apply: %w", err)
		}
		sig = nil
	}
	res, err := c.c.Apply(ctx, &pb.ApplyRequest{Allowlist: data, Source: a.Source(), Signature: sig})
	if err != nil {
		return Applied{}, clientError("apply", err)
	}
	return Applied{Generation: res.GetGeneration(), Entries: res.GetEntries(), Mode: res.GetMode()}, nil
}

// Status asks the companion for the guard's state.
func (c *GRPCClient) Status(ctx context.Context) (Status, error) {
	r, err := c.c.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return Status{}, clientError("status", err)
	}
	return Status{
		Mode: r.GetMode(), Generation: r.GetGeneration(), Entries: r.GetEntries(), Sealed: r.GetSealed(),
		PinDir: r.GetPinDir(), Links: r.GetLinks(), Missing: r.GetMissing(),
		Allowed: r.GetAllowed(), Blocked: r.GetBlocked(), Audited: r.GetAudited(), LostEvents: r.GetLostEvents(),
		Allowlist: r.GetAllowlist(), MissingDecisions: r.GetMissingDecisions(), Version: r.GetVersion(),
	}, nil
}

// Decisions opens the decision stream. It returns once the companion has
// subscribed (or refused), so no decision made after it returns is missed.
// The channel is closed when ctx ends or the stream breaks (the companion
// exited, or its enforcer stopped): a closed channel is the signal to
// reconnect.
func (c *GRPCClient) Decisions(ctx context.Context) (<-chan event.GuardMessage, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := c.c.Decisions(ctx, &pb.DecisionsRequest{})
	if err != nil {
		cancel()
		return nil, clientError("decisions", err)
	}
	md, err := stream.Header()
	if err != nil {
		cancel()
		return nil, clientError("decisions", err)
	}
	if len(md.Get(subscribedKey)) == 0 {
		// The server ended the call before subscribing: Recv has its status.
		_, err := stream.Recv()
		cancel()
		if err == nil || errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("companion decisions: %w: stream ended before it started", ErrDisconnected)
		}
		return nil, clientError("decisions", err)
	}
	ch := make(chan event.GuardMessage, 64)
	go func() {
		defer cancel()
		defer close(ch)
		for {
			p, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case ch <- fromProto(p):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
