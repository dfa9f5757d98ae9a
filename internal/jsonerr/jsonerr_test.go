package jsonerr

import (
	"encoding/json"
	"testing"
)

func TestProblem(t *testing.T) {
	var v struct {
		N int `json:"n"`
	}
	for body, want := range map[string]string{`{"n": "x"}`: "wrong type for n", `{"n": `: "syntax error", `[1]`: "invalid value"} {
		err := json.Unmarshal([]byte(body), &v)
		if err == nil {
			t.Fatalf("%s decoded", body)
		}
		if got := Problem(err); got != want {
			t.Errorf("Problem(%s) = %q, want %q", body, got, want)
		}
	}
}
