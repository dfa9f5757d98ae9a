package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/berth-dev/berth/buildmanager"
	"github.com/berth-dev/berth/internal/store"
)

// FiledropPath is where FiledropHandler must be mounted: upload URLs are
// FiledropPath + "<file_id>?expires=<unix>&sig=<signature>".
const FiledropPath = "/filedrop/"

// filedrop answers POST /api/v1/filedrop/ {"mimeType"} with a pre-signed,
// single-use upload URL and the file ID to start a build with. The MIME
// type is advisory (workers tell a Dockerfile from an archive by its bytes).
func (b *Builds) filedrop(c echo.Context) error {
	if _, err := RequireAccount(c); err != nil {
		return err
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
	id := uuid.NewString()
	expires := b.a.now().Add(b.o.FiledropTTL).Unix()
	q := url.Values{}
	q.Set("expires", strconv.FormatInt(expires, 10))
	q.Set("sig", b.sign(id, expires))
	u := b.a.externalURL(c.Request()) + FiledropPath + id + "?" + q.Encode()
	return c.JSON(http.StatusOK, map[string]string{"url": u, "file_id": id})
}

// sign is the upload URL's signature: it binds the file ID to the expiry.
func (b *Builds) sign(fileID string, expires int64) string {
	m := hmac.New(sha256.New, b.o.FiledropKey)
	m.Write([]byte("berth-filedrop\x00" + fileID + "\x00" + strconv.FormatInt(expires, 10)))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// FiledropHandler takes the PUT of an upload URL: the signature is the only
// credential. An expired, altered or already used URL is a 403; a body over
// the context store's limit a 413.
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
	// Checking first spares reading a body that cannot be kept; Put's
	// conflict still settles a race between two uploads.
	if rc, _, err := b.o.Contexts.Open(ctx, id); err == nil {
		_ = rc.Close()
		return used
	} else if !errors.Is(err, store.ErrNotFound) {
		return Internal(err)
	}
	n, err := b.o.Contexts.Put(ctx, id, r.Body)
	switch {
	case errors.Is(err, buildmanager.ErrContextTooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request", Detail: "The build context is larger than this server accepts"}
	case errors.Is(err, store.ErrConflict):
		return used
	case err != nil:
		return Internal(err)
	}
	b.a.log.InfoContext(ctx, "build context uploaded", "file_id", id, "bytes", n)
	return c.NoContent(http.StatusOK)
}
