package api

import (
	"context"
	"errors"
	"net/url"
	"time"

	"github.com/berth-dev/berth/internal/egress"
)

// archiveCheckTimeout bounds the name lookup of an archive URL's host.
const archiveCheckTimeout = 5 * time.Second

// refusedArchiveURL is the answer for an archive_url whose host the egress
// policy refuses: the same for every address, port and path.
const refusedArchiveURL = "archive_url names a host berth does not fetch from: loopback, private and link-local addresses are refused unless an administrator allows their network (OUTBOUND_ALLOWED_NETWORKS)."

// checkArchiveURL refuses an archive URL whose host has no address the
// egress policy allows, so that the build is not even queued. The worker
// checks every connection it makes again (the name may resolve elsewhere
// by then, and redirects may follow); a name that does not resolve now is
// left to it.
func (a *API) checkArchiveURL(ctx context.Context, u *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, archiveCheckTimeout)
	defer cancel()
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if err := a.o.Egress.CheckHost(ctx, u.Hostname(), port); errors.Is(err, egress.ErrRefused) {
		return BadRequest(refusedArchiveURL)
	}
	return nil
}
