package link

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// Transport opens the connections a Link uses. Addresses are
// "[2001:db8::1]:647" strings. Production uses TCP; tests plug in an
// in-memory network. Implementations must be safe for concurrent use.
type Transport interface {
	// Dial connects from the IP of local (any port) to remote. It must
	// return promptly once ctx is done.
	Dial(ctx context.Context, local, remote string) (net.Conn, error)
	// Listen listens on local.
	Listen(local string) (net.Listener, error)
}

// TCP is the real Transport: TCP over the host's network stack.
type TCP struct{}

// Dial connects to remote from local's IP and an ephemeral port, so that
// the partner sees the configured source address.
func (TCP) Dial(ctx context.Context, local, remote string) (net.Conn, error) {
	var d net.Dialer
	if ap, err := netip.ParseAddrPort(local); err == nil && !ap.Addr().IsUnspecified() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ap.Addr(), 0))
	} else if err != nil {
		return nil, fmt.Errorf("dial from %q: %w", local, err)
	}
	return d.DialContext(ctx, "tcp", remote)
}

// Listen listens on local.
func (TCP) Listen(local string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(context.Background(), "tcp", local)
}

// remoteIP returns the IP of a connection's remote address, without zone
// and with IPv4-mapped addresses unmapped.
func remoteIP(c net.Conn) (netip.Addr, bool) {
	ra := c.RemoteAddr()
	if ra == nil {
		return netip.Addr{}, false
	}
	if t, ok := ra.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap().WithZone(""), true
	}
	ap, err := netip.ParseAddrPort(ra.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}
