package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http/httpproxy"
)

// maxRedirects bounds the redirects HTTPClient follows.
const maxRedirects = 10

// HTTPClient returns p's HTTP client: every connection, redirects
// included, goes through DialContext. A proxy from the environment
// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), which an administrator set, is
// connected to as it is, after the request's own host passed CheckHost;
// the proxy resolves that name again, so it should refuse internal
// addresses too. The client is made once and shared.
func (p *Policy) HTTPClient() *http.Client {
	p = p.or()
	p.httpOnce.Do(func() {
		proxies := httpproxy.FromEnvironment()
		proxyFunc := proxies.ProxyFunc()
		proxyAddrs := map[string]bool{}
		for _, raw := range []string{proxies.HTTPProxy, proxies.HTTPSProxy} {
			if addr, ok := proxyAddr(raw); ok {
				proxyAddrs[addr] = true
			}
		}
		dialPolicy := p.DialContext
		t := &http.Transport{
			Proxy: func(req *http.Request) (*url.URL, error) {
				u, err := proxyFunc(req.URL)
				if u == nil || err != nil {
					return u, err
				}
				if err := p.CheckHost(req.Context(), req.URL.Hostname(), port(req.URL)); err != nil {
					return nil, err
				}
				return u, nil
			},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if proxyAddrs[addr] {
					return p.dialer(false)(ctx, network, addr)
				}
				return dialPolicy(ctx, network, addr)
			},
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		p.httpClient = &http.Client{Transport: t, CheckRedirect: checkRedirect}
	})
	return p.httpClient
}

// checkRedirect follows at most maxRedirects redirects, to http(s) only.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return errors.New("redirected to a URL that is not http or https")
	}
	return nil
}

// port is u's port, or its scheme's.
func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}

// proxyAddr is the host:port net/http dials for a proxy URL of the
// environment ("proxy:3128", "http://proxy:3128", "socks5://proxy").
func proxyAddr(raw string) (string, bool) {
	if raw == "" {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		// httpproxy reads a bare "host:port" as http://host:port.
		if u, err = url.Parse("http://" + raw); err != nil || u.Host == "" {
			return "", false
		}
	}
	p := u.Port()
	if p == "" {
		switch u.Scheme {
		case "https":
			p = "443"
		case "socks5", "socks5h":
			p = "1080"
		default:
			p = "80"
		}
	}
	return net.JoinHostPort(u.Hostname(), p), true
}
