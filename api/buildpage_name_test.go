package api

import (
	"testing"

	"github.com/berth-dev/berth/internal/store"
)

func TestPageName(t *testing.T) {
	const id = "4642a775-84ad-4244-ae76-91aabedea692"
	for _, c := range []struct {
		display, fileID, want string
	}{
		{"9f86d08", "0b5c3e1a-file", "9f86d08"},                            // an upload, named by its checksum
		{"0b5c3e1a-file", "0b5c3e1a-file", "4642a77"},                      // an upload named by its file ID
		{"", "", "4642a77"},                                                // no name
		{"https://example.com/ctx.tgz", "", "https://example.com/ctx.tgz"}, // an archive URL
	} {
		b := &store.Build{ID: id, DisplayName: c.display, Request: store.BuildRequest{FileID: c.fileID}}
		if got := pageName(b); got != c.want {
			t.Errorf("display %q, file %q: page name %q, want %q", c.display, c.fileID, got, c.want)
		}
	}
}
