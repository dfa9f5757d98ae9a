package registry

import (
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	regauth "github.com/berth-dev/berth/registry/auth"
)

// declaredCodes reads errors.go for every constant of type ErrorCode, so
// that a code added without a status fails here rather than as a 0 status
// (a panic in WriteHeader) on the first request that meets it.
func declaredCodes(t *testing.T) []ErrorCode {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var codes []ErrorCode
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "ErrorCode" {
				continue
			}
			for i := range vs.Names {
				lit := vs.Values[i].(*ast.BasicLit)
				codes = append(codes, ErrorCode(lit.Value[1:len(lit.Value)-1]))
			}
		}
	}
	return codes
}

func TestEveryCodeHasAStatus(t *testing.T) {
	codes := declaredCodes(t)
	if len(codes) == 0 {
		t.Fatal("no ErrorCode constants found in errors.go")
	}
	for _, c := range codes {
		status, ok := codeStatus[c]
		if !ok {
			t.Errorf("%s has no status in codeStatus", c)
			continue
		}
		if status < 400 || status > 599 {
			t.Errorf("%s is sent with %d, not an error status", c, status)
		}
	}
	if len(codeStatus) != len(codes) {
		t.Errorf("codeStatus has %d codes, errors.go declares %d", len(codeStatus), len(codes))
	}
}

// The distribution spec's error codes (code-1 … code-14), with the status
// its endpoint table or text gives each where the code alone decides it.
func TestSpecCodesPresent(t *testing.T) {
	spec := map[string]int{
		"BLOB_UNKNOWN":          http.StatusNotFound,
		"BLOB_UPLOAD_INVALID":   http.StatusBadRequest,
		"BLOB_UPLOAD_UNKNOWN":   http.StatusNotFound,
		"DIGEST_INVALID":        http.StatusBadRequest,
		"MANIFEST_BLOB_UNKNOWN": http.StatusBadRequest,
		"MANIFEST_INVALID":      http.StatusBadRequest,
		"MANIFEST_UNKNOWN":      http.StatusNotFound,
		"NAME_INVALID":          http.StatusBadRequest,
		"NAME_UNKNOWN":          http.StatusNotFound,
		"SIZE_INVALID":          http.StatusBadRequest,
		"UNAUTHORIZED":          http.StatusUnauthorized,
		"DENIED":                http.StatusForbidden,
		"UNSUPPORTED":           http.StatusMethodNotAllowed,
		"TOOMANYREQUESTS":       http.StatusTooManyRequests,
	}
	for code, want := range spec {
		got, ok := codeStatus[ErrorCode(code)]
		if !ok {
			t.Errorf("spec code %s missing", code)
		} else if got != want {
			t.Errorf("%s: status %d, want %d", code, got, want)
		}
	}
}

// The overrides carry the status the spec (or HTTP) asks for on their
// endpoint, and keep a code of the spec's list.
func TestStatusOverrides(t *testing.T) {
	cases := []struct {
		name string
		err  *Error
		code ErrorCode
		want int
	}{
		{"no such endpoint", errNoEndpoint(), CodeUnsupported, http.StatusNotFound},
		{"digest algorithm", errDigestUnsupported("md5"), CodeUnsupported, http.StatusBadRequest},
		{"page size", errPageSizeInvalid(), CodeUnsupported, http.StatusBadRequest},
		{"chunk out of order", errRangeInvalid("at %d", 3), CodeBlobUploadInvalid, http.StatusRequestedRangeNotSatisfiable},
		{"range outside blob", errRangeNotSatisfiable(), CodeBlobUnknown, http.StatusRequestedRangeNotSatisfiable},
		{"manifest too large", errManifestTooLarge("big"), CodeSizeInvalid, http.StatusRequestEntityTooLarge},
		{"method", errMethodNotAllowed(), CodeUnsupported, http.StatusMethodNotAllowed},
	}
	for _, c := range cases {
		if c.err.Code != c.code || c.err.Status != c.want {
			t.Errorf("%s: %s %d, want %s %d", c.name, c.err.Code, c.err.Status, c.code, c.want)
		}
	}
}

func TestChallengeIsWrittenByTheOneWriter(t *testing.T) {
	ce := &regauth.ChallengeError{Status: http.StatusUnauthorized, Header: `Bearer realm="r"`,
		Code: regauth.CodeUnauthorized, Message: "authentication required"}
	herr := authError(ce)
	if !errors.Is(herr, ce) {
		t.Fatal("the challenge is not kept as the cause")
	}
	w := httptest.NewRecorder()
	writeError(w, httptest.NewRequest("GET", "/v2/", nil), herr)
	if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") != `Bearer realm="r"` {
		t.Fatalf("status %d, challenge %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	var body errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != CodeUnauthorized {
		t.Fatalf("body %s (%v)", w.Body, err)
	}

	throttled := authError(&regauth.ChallengeError{Status: http.StatusTooManyRequests, Code: regauth.CodeTooManyRequests,
		Message: "too many failed logins", RetryAfter: 1500 * time.Millisecond})
	w = httptest.NewRecorder()
	writeError(w, httptest.NewRequest("GET", "/v2/", nil), throttled)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "2" || w.Header().Get("WWW-Authenticate") != "" {
		t.Fatalf("throttled: status %d, headers %v", w.Code, w.Header())
	}

	// Anything else an Authorizer returns is the server's failure.
	if herr := authError(errors.New("store down")); herr.Status != http.StatusInternalServerError || herr.Code != codeInternal {
		t.Fatalf("internal failure sent as %s %d", herr.Code, herr.Status)
	}
}
