// Package jsonerr describes JSON decoding errors to the client that sent
// the JSON, without echoing its input.
package jsonerr

import (
	"encoding/json"
	"errors"
)

// Problem describes a decoding error without echoing input: the field of
// the wrong type, a syntax error, or an invalid value.
func Problem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return "wrong type for " + te.Field
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return "syntax error"
	}
	return "invalid value"
}
