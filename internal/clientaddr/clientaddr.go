// Package clientaddr finds the address of the client behind a request:
// the peer's, or, when the peer is a proxy the operator trusts
// (http.trusted_proxies), the address that proxy says it forwarded for.
//
// Forwarding headers are only ever read from a trusted peer: anyone can
// send them. The chain is read from the right (the hop nearest walcast)
// past every trusted proxy; the first address that is not a trusted proxy
// is the client. A malformed entry ends the walk at the hop that added it.
package clientaddr

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Resolver finds client addresses.
type Resolver struct {
	trusted []netip.Prefix
	header  string
}

// Headers a trusted proxy may write the client's address in.
const (
	XForwardedFor = "X-Forwarded-For"
	Forwarded     = "Forwarded"
)

// New returns a Resolver that trusts the proxies in cidrs (addresses or
// CIDR prefixes) and reads header (XForwardedFor when empty): only the
// header the proxies write. Proxies pass on what a client sent in the
// other one (nginx, ALB and Envoy append to X-Forwarded-For and leave a
// client's Forwarded alone), so reading both would let a client choose its
// own address. No proxies trusts no header.
func New(cidrs []string, header ...string) (*Resolver, error) {
	r := &Resolver{header: XForwardedFor}
	if len(header) > 0 && header[0] != "" {
		switch {
		case strings.EqualFold(header[0], XForwardedFor):
		case strings.EqualFold(header[0], Forwarded):
			r.header = Forwarded
		default:
			return nil, fmt.Errorf("client address header %q is neither %s nor %s", header[0], XForwardedFor, Forwarded)
		}
	}
	for _, c := range cidrs {
		c = strings.TrimSpace(c)
		p, err := netip.ParsePrefix(c)
		if err != nil {
			a, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q is neither an address nor a CIDR prefix", c)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r, nil
}

func (r *Resolver) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP is req's client address, without a port.
func (r *Resolver) ClientIP(req *http.Request) string {
	peer := peerAddr(req.RemoteAddr)
	if !peer.IsValid() {
		return req.RemoteAddr
	}
	if len(r.trusted) == 0 || !r.isTrusted(peer) {
		return peer.String()
	}
	chain := forwardedFor(req.Header, r.header)
	client := peer
	for i := len(chain) - 1; i >= 0; i-- {
		a, ok := parseHop(chain[i])
		if !ok {
			break // the hop that wrote it is the client as far as walcast can tell
		}
		client = a
		if !r.isTrusted(a) {
			break
		}
	}
	return client.String()
}

func peerAddr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// forwardedFor lists the addresses of header (Forwarded's "for" values,
// RFC 7239, or X-Forwarded-For's), nearest last.
func forwardedFor(h http.Header, header string) []string {
	var out []string
	if header == Forwarded {
		fwd := h.Values(Forwarded)
		for _, line := range fwd {
			for _, elem := range strings.Split(line, ",") {
				found := ""
				for _, pair := range strings.Split(elem, ";") {
					k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if ok && strings.EqualFold(k, "for") {
						found = strings.Trim(v, `"`)
					}
				}
				out = append(out, found) // "" for an element without for: malformed
			}
		}
		return out
	}
	for _, line := range h.Values("X-Forwarded-For") {
		for _, a := range strings.Split(line, ",") {
			out = append(out, strings.TrimSpace(a))
		}
	}
	return out
}

// parseHop reads one forwarded address: 1.2.3.4, 1.2.3.4:5678, [::1],
// [::1]:5678 or ::1.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// LimitKey is what a per-address limit counts an address under: an IPv4
// address, or an IPv6 address's /64 (one subscriber's network holds a /64;
// counting its addresses one by one would give it unlimited budgets).
func LimitKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Is4() || a.Is4In6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}
