package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"iter"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/store"
)

// PagePath is where PageHandler must be mounted: the build page is
// PagePath + "{namespace}/{repo}/build/{uuid}".
const PagePath = "/repository/"

// streamLogs is GET …/build/{uuid}/logs/stream on the API.
func (b *Builds) streamLogs(c echo.Context) error {
	built, _, err := b.buildFromPath(c, b.logRole())
	if err != nil {
		return err
	}
	return b.serveLogStream(c, built)
}

// serveLogStream sends the build's log as server-sent events, one event per
// entry (id: the entry's index, data: the entry's JSON), from the entry
// after Last-Event-ID (a reconnecting EventSource) or from ?start=. It ends
// after the last entry of an ended build; a stream asked for past the end
// of an ended build is a 204, which tells an EventSource not to reconnect.
// A comment every Heartbeat keeps proxies from closing an idle stream.
func (b *Builds) serveLogStream(c echo.Context, built *store.Build) error {
	r := c.Request()
	ctx := r.Context()
	from, err := startParam(c.QueryParam("start"))
	if err != nil {
		return err
	}
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		n, err := strconv.Atoi(strings.TrimSpace(last))
		if err != nil || n < 0 {
			return BadRequest("Last-Event-ID must be a log entry index")
		}
		from = n + 1
	}
	if built.Phase.Terminal() {
		total, err := b.o.Manager.LogLength(ctx, built.ID)
		if err != nil {
			return Internal(err)
		}
		if from >= total {
			return c.NoContent(http.StatusNoContent)
		}
	}
	entries, stop, err := b.o.Manager.Subscribe(ctx, built.ID, from)
	if err != nil {
		return Internal(err)
	}
	defer stop()
	w := c.Response()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx buffers responses unless told otherwise.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	w.Flush()
	tick := time.NewTicker(b.o.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-entries:
			if !ok {
				return nil
			}
			data, err := json.Marshal(e)
			if err != nil {
				return nil // the status line is sent: nothing left to answer
			}
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Index, data); err != nil {
				return nil
			}
			w.Flush()
		case <-tick.C:
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
			w.Flush()
		case <-ctx.Done():
			return nil
		}
	}
}

// PageHandler serves the build page (the phase and the live log) and the
// log stream it listens to, for a caller who may read the build's log,
// signed in with the session cookie or sending Basic or Bearer
// credentials. A browser without credentials is asked for Basic ones.
// Mount it at PagePath.
//
// The page's stream sits beside the page rather than under /api/v1
// because an EventSource cannot send the X-Requested-With header the API
// demands of cookie callers; it is a read, and the SameSite=Lax session
// cookie is not sent on cross-site subresource requests.
func (b *Builds) PageHandler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = b.pageError
	e.Use(b.pageAuthenticate)
	e.GET(PagePath+":namespace/:repo/build/:uuid", b.page)
	e.GET(PagePath+":namespace/:repo/build/:uuid/logs/stream", b.pageStream)
	return e
}

// pageAuthenticate identifies the caller as the API does, except that the
// session cookie needs no X-Requested-With (only GETs are served here).
func (b *Builds) pageAuthenticate(next echo.HandlerFunc) echo.HandlerFunc {
	viaAPI := b.a.authenticate(next)
	return func(c echo.Context) error {
		if c.Request().Header.Get("Authorization") != "" {
			return viaAPI(c)
		}
		if ck, err := c.Request().Cookie(SessionCookie); err == nil && ck.Value != "" {
			_, p, err := b.a.sessionPrincipal(c, ck.Value)
			if err != nil {
				return err
			}
			if p != nil {
				c.Set(keyPrincipal, p)
			}
		}
		return next(c)
	}
}

// pageBuild is the path's build for a caller who may read its log. An
// anonymous caller who cannot is asked to authenticate, whether or not the
// build exists.
func (b *Builds) pageBuild(c echo.Context) (*store.Build, error) {
	built, _, err := b.buildFromPath(c, b.logRole())
	var e *Error
	if err != nil && Caller(c).IsAnonymous() && errors.As(err, &e) && (e.Status == http.StatusNotFound || e.Status == http.StatusUnauthorized) {
		return nil, Unauthorized()
	}
	return built, err
}

func (b *Builds) pageStream(c echo.Context) error {
	built, err := b.pageBuild(c)
	if err != nil {
		return err
	}
	return b.serveLogStream(c, built)
}

// pageError answers the page's failures in plain text.
func (b *Builds) pageError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var e *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &e):
	case errors.As(err, &he):
		e = &Error{Status: he.Code, Detail: http.StatusText(he.Code)}
	default:
		e = Internal(err)
	}
	if e.Status >= 500 {
		b.a.log.ErrorContext(c.Request().Context(), "build page failed", "path", c.Request().URL.Path, "err", e)
	}
	if e.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="berth"`)
	}
	_ = c.String(e.Status, strconv.Itoa(e.Status)+" "+e.Detail+"\n")
}

// pageName is the build's short name for the page: its display name, but
// for a build stored with the uploaded file's ID as its name (builds
// requested before uploads were named by their checksum, or submitted
// without a name) the first 7 characters of the build's ID, so that the
// page does not show what looks like a second ID.
func pageName(built *store.Build) string {
	if built.DisplayName == "" || built.DisplayName == built.Request.FileID {
		return built.ID[:min(7, len(built.ID))]
	}
	return built.DisplayName
}

// pageData fills pageTemplate.
type pageData struct {
	Repo, ID, Name, Phase, Started string
	Tags                           []string
	Error                          string
	Digests                        map[string]string
	// Entries yields the log as the page is written, and counts them.
	Entries iter.Seq[buildmanager.LogEntry]
	Stream  string
	ended   bool
	total   int
	shown   int
	readErr error
}

// Next is where the page's stream starts: after the last entry shown.
func (d *pageData) Next() int { return d.shown }

// Ended says the page holds the whole log of an ended build.
func (d *pageData) Ended() bool { return d.ended && d.shown == d.total }

func (b *Builds) page(c echo.Context) error {
	built, err := b.pageBuild(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	v := b.view(built, store.RoleRead)
	d := &pageData{
		Repo: built.Namespace + "/" + built.Repository, ID: built.ID, Name: pageName(built),
		Phase: v.Phase, Started: v.Started, Tags: built.Tags, Error: built.ErrorMessage,
		Digests: built.ManifestDigests, ended: built.Phase.Terminal(),
		Stream: PagePath + built.Namespace + "/" + built.Repository + "/build/" + built.ID + "/logs/stream",
	}
	w := c.Response()
	err = b.o.Manager.ReadLog(ctx, built.ID, 0, -1, func(total int, entries iter.Seq2[buildmanager.LogEntry, error]) error {
		d.total = total
		// A log that cannot be read to the end leaves the rest to the
		// page's stream, which starts after the last entry shown.
		d.Entries = func(yield func(buildmanager.LogEntry) bool) {
			for e, err := range entries {
				if err != nil {
					d.readErr = err
					return
				}
				if !yield(e) {
					return
				}
				d.shown++
			}
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'")
		w.WriteHeader(http.StatusOK)
		return errors.Join(pageTemplate.Execute(w, d), d.readErr)
	})
	if err != nil && !w.Committed {
		return Internal(err)
	}
	if err != nil && ctx.Err() == nil {
		b.a.log.ErrorContext(ctx, "build page failed", "build", built.ID, "err", err)
	}
	return nil
}

var pageTemplate = template.Must(template.New("build").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Build {{.Name}} · {{.Repo}}</title>
<style>
body{font-family:sans-serif;margin:1.5em}
#log{background:#111;color:#ddd;padding:1em;font:13px/1.4 monospace;white-space:pre-wrap;word-break:break-all}
.phase{color:#6cf;font-weight:bold}.command{color:#fc6;font-weight:bold}.error{color:#f66;font-weight:bold}
#phase{font-weight:bold}
</style></head><body>
<h1>{{.Repo}}: build {{.Name}}</h1>
<p>Build <code>{{.ID}}</code>, started {{.Started}}. Tags:{{range .Tags}} <code>{{.}}</code>{{end}}</p>
<p>Phase: <span id="phase">{{.Phase}}</span></p>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
{{if .Digests}}<ul>{{range $t, $d := .Digests}}<li><code>{{$.Repo}}:{{$t}}@{{$d}}</code></li>{{end}}</ul>{{end}}
<div id="log">{{range .Entries}}<div{{if .Type}} class="{{.Type}}"{{end}}>{{.Message}}</div>{{end}}</div>
<script>
(function () {
  var ended = {{.Ended}};
  if (ended || !window.EventSource) return;
  var log = document.getElementById("log"), phase = document.getElementById("phase");
  var terminal = {complete: 1, error: 1, internalerror: 1, cancelled: 1};
  var src = new EventSource({{.Stream}} + "?start=" + {{.Next}});
  src.onmessage = function (ev) {
    var e = JSON.parse(ev.data), div = document.createElement("div");
    if (e.type) div.className = e.type;
    div.textContent = e.message;
    log.appendChild(div);
    window.scrollTo(0, document.body.scrollHeight);
    if (e.type === "phase") {
      phase.textContent = e.message;
      if (terminal[e.message]) src.close();
    }
  };
})();
</script>
</body></html>
`))
