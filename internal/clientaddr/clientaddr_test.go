package clientaddr

import (
	"net/http"
	"testing"
)

func TestClientIP(t *testing.T) {
	r, err := New([]string{"10.0.0.0/8", "192.168.1.1", "::1"})
	if err != nil {
		t.Fatal(err)
	}
	none, _ := New(nil)
	fwd, err := New([]string{"10.0.0.0/8", "192.168.1.1", "::1"}, "forwarded")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, peer, xff, fwd string
		res                  *Resolver
		want                 string
	}{
		{"no proxies trusted: headers ignored", "10.1.1.1:5000", "203.0.113.7", "", none, "10.1.1.1"},
		{"untrusted peer: headers ignored", "198.51.100.1:5000", "203.0.113.7", "", r, "198.51.100.1"},
		{"trusted peer, one hop", "10.1.1.1:5000", "203.0.113.7", "", r, "203.0.113.7"},
		{"spoofed left entries are not the client", "10.1.1.1:5000", "1.2.3.4, 203.0.113.7", "", r, "203.0.113.7"},
		{"two trusted proxies", "10.1.1.1:5000", "203.0.113.7, 192.168.1.1", "", r, "203.0.113.7"},
		{"all trusted: the leftmost", "10.1.1.1:5000", "10.9.9.9, 10.8.8.8", "", r, "10.9.9.9"},
		{"trusted peer without header", "10.1.1.1:5000", "", "", r, "10.1.1.1"},
		{"malformed nearest entry", "10.1.1.1:5000", "203.0.113.7, garbage", "", r, "10.1.1.1"},
		{"malformed farther entry", "10.1.1.1:5000", "garbage, 10.2.2.2, 203.0.113.7", "", r, "203.0.113.7"},
		{"with a port", "10.1.1.1:5000", "203.0.113.7:443", "", r, "203.0.113.7"},
		{"a client's Forwarded behind an X-Forwarded-For proxy", "10.1.1.1:5000", "203.0.113.7", `for=1.2.3.4`, r, "203.0.113.7"},
		{"Forwarded, when the proxies write it", "10.1.1.1:5000", "1.1.1.1", `for=203.0.113.9;proto=https, for="[2001:db8::1]:443"`, fwd, "2001:db8::1"},
		{"a client's X-Forwarded-For behind a Forwarded proxy", "10.1.1.1:5000", "1.2.3.4", `for=203.0.113.9`, fwd, "203.0.113.9"},
		{"Forwarded for= absent", "10.1.1.1:5000", "", `proto=https`, fwd, "10.1.1.1"},
		{"IPv6 loopback trusted", "[::1]:5000", "203.0.113.7", "", r, "203.0.113.7"},
		{"IPv4-mapped peer", "[::ffff:10.1.1.1]:5000", "203.0.113.7", "", r, "203.0.113.7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			if c.xff != "" {
				req.Header.Set("X-Forwarded-For", c.xff)
			}
			if c.fwd != "" {
				req.Header.Set("Forwarded", c.fwd)
			}
			if got := c.res.ClientIP(req); got != c.want {
				t.Fatalf("ClientIP = %s, want %s", got, c.want)
			}
		})
	}
	if _, err := New([]string{"not an address"}); err == nil {
		t.Fatal("a bad trusted proxy was accepted")
	}
	if _, err := New(nil, "X-Real-IP"); err == nil {
		t.Fatal("an unknown header was accepted")
	}
}

func FuzzClientIP(f *testing.F) {
	r, _ := New([]string{"10.0.0.0/8"})
	f.Add("10.0.0.1:1", "1.2.3.4, 10.0.0.2", `for="[::1]:80";by=x`)
	f.Fuzz(func(t *testing.T, peer, xff, fwd string) {
		req := &http.Request{RemoteAddr: peer, Header: http.Header{"X-Forwarded-For": {xff}, "Forwarded": {fwd}}}
		_ = r.ClientIP(req)
	})
}

func TestLimitKey(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7":          "203.0.113.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"not an address":       "not an address",
	} {
		if got := LimitKey(in); got != want {
			t.Errorf("LimitKey(%s) = %s, want %s", in, got, want)
		}
	}
}
