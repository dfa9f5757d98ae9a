package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/store"
)

// FiledropPath is where FiledropHandler must be mounted: upload URLs are
// FiledropPath + "<file_id>?expires=<unix>&sig=<signature>".
const FiledropPath = "/filedrop/"

// filedrop answers POST /api/v1/filedrop/ {"mimeType"} with a pre-signed,
// single-use upload URL and the file ID to start a build with. The MIME
// type is advisory (workers tell a Dockerfile from an archive by its bytes).
//
// Only users who may write somewhere upload: not robots (they pull and
// push, never build by hand), not OAuth tokens without repo:write or
// repo:create. Every user may create repositories in its own namespace,
// so no repository lookup is needed. The file is recorded as the caller's
// at once, which is what the per-account rate limit and quota count.
func (b *Builds) filedrop(c echo.Context) error {
	acct, err := RequireUser(c)
	if err != nil {
		return err
	}
	if who := Caller(c); !who.HasScope(auth.ScopeRepoWrite) && !who.HasScope(auth.ScopeRepoCreate) {
		return Forbidden()
	}
	var body struct {
		MimeType *string `json:"mimeType"`
	}
	if err := DecodeJSON(c, &body, false); err != nil {
		return err
	}
	if body.MimeType == nil {
		return BadRequest("mimeType is required")
	}
	ctx := c.Request().Context()
	now := b.a.now()
	if lim := b.o.Limits.PerHour; lim > 0 {
		n, _, err := b.a.o.Store.BuildFileUsage(ctx, acct.ID, now.Add(-time.Hour))
		if err != nil {
			return Internal(err)
		}
		if n >= lim {
			return &Error{Status: http.StatusTooManyRequests, Type: "too_many_requests",
				Detail: fmt.Sprintf("At most %d uploads an hour are allowed; try again later", lim), RetryAfter: time.Minute}
		}
	}
	if left, err := b.quotaLeft(c, acct.ID); err != nil {
		return err
	} else if left == 0 {
		return &Error{Status: http.StatusTooManyRequests, Type: "too_many_requests", RetryAfter: time.Hour,
			Detail: fmt.Sprintf("This account uploaded its quota of %d bytes in the last 24 hours; try again later", b.o.Limits.QuotaBytes)}
	}
	id := uuid.NewString()
	expiresAt := now.Add(b.o.FiledropTTL)
	if err := b.a.o.Store.PutBuildFile(ctx, &store.BuildFile{ID: id, UploaderID: acct.ID, ExpiresAt: expiresAt}); err != nil {
		return Internal(err)
	}
	expires := expiresAt.Unix()
	q := url.Values{}
	q.Set("expires", strconv.FormatInt(expires, 10))
	q.Set("sig", b.sign(id, expires))
	u := b.a.externalURL(c.Request()) + FiledropPath + id + "?" + q.Encode()
	return c.JSON(http.StatusOK, map[string]string{"url": u, "file_id": id})
}

// quotaDay is the window of the per-account upload quota.
const quotaDay = 24 * time.Hour

// quotaLeft is how many more bytes account may upload now: -1 when there
// is no quota.
func (b *Builds) quotaLeft(c echo.Context, account int64) (int64, error) {
	quota := b.o.Limits.QuotaBytes
	if quota <= 0 {
		return -1, nil
	}
	_, used, err := b.a.o.Store.BuildFileUsage(c.Request().Context(), account, b.a.now().Add(-quotaDay))
	if err != nil {
		return 0, Internal(err)
	}
	return max(quota-used, 0), nil
}

// quotaExceeded refuses an upload past what the uploader's quota has left.
func quotaExceeded(quota int64) error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request",
		Detail: fmt.Sprintf("This account's uploads would exceed its quota of %d bytes a day", quota)}
}

// sign is the upload URL's signature: it binds the file ID to the expiry.
func (b *Builds) sign(fileID string, expires int64) string {
	m := hmac.New(sha256.New, b.o.FiledropKey)
	m.Write([]byte("berth-filedrop\x00" + fileID + "\x00" + strconv.FormatInt(expires, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// FiledropHandler takes the PUT of an upload URL: the signature is the only
// credential. An expired, altered or already used URL is a 403; a body over
// the context store's limit, or over what the uploader's quota has left, a
// 413.
func (b *Builds) FiledropHandler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = b.a.handleError
	e.PUT(FiledropPath+":file_id", b.upload)
	return e
}

func (b *Builds) upload(c echo.Context) error {
	r := c.Request()
	ctx := r.Context()
	id := c.Param("file_id")
	expires, err := strconv.ParseInt(c.QueryParam("expires"), 10, 64)
	if err != nil || !hmac.Equal([]byte(c.QueryParam("sig")), []byte(b.sign(id, expires))) {
		return &Error{Status: http.StatusForbidden, Type: "invalid_request", Detail: "Invalid upload signature"}
	}
	if b.a.now().Unix() > expires {
		return &Error{Status: http.StatusForbidden, Type: "invalid_request", Detail: "This upload URL has expired"}
	}
	used := &Error{Status: http.StatusForbidden, Type: "invalid_request", Detail: "This upload URL was already used"}
	f, err := b.a.o.Store.GetBuildFile(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Signed, unexpired, and yet unknown: issued by a server with the
		// same key on another database.
		return &Error{Status: http.StatusForbidden, Type: "invalid_request", Detail: "Invalid upload signature"}
	case err != nil:
		return Internal(err)
	case f.Digest != "":
		return used
	}
	body := r.Body
	if f.UploaderID != 0 {
		left, err := b.quotaLeft(c, f.UploaderID)
		if err != nil {
			return err
		}
		if left >= 0 {
			body = http.MaxBytesReader(c.Response(), r.Body, left)
		}
	}
	n, err := b.o.Contexts.Put(ctx, id, body)
	var overQuota *http.MaxBytesError
	switch {
	case errors.Is(err, buildmanager.ErrContextTooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Detail: "The build context is larger than this server accepts"}
	case errors.As(err, &overQuota):
		return quotaExceeded(b.o.Limits.QuotaBytes)
	case errors.Is(err, store.ErrConflict):
		return used
	case err != nil:
		return Internal(err)
	}
	b.a.log.InfoContext(ctx, "build context uploaded", "file_id", id, "bytes", n)
	return c.NoContent(http.StatusOK)
}
