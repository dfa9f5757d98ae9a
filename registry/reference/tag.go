package reference

import "fmt"

// MaxTagLength is the longest tag the distribution spec allows.
const MaxTagLength = 128

// ValidateTag reports whether tag matches the distribution-spec tag grammar
// [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: empty", ErrTagInvalid)
	}
	if len(tag) > MaxTagLength {
		return fmt.Errorf("%w: %d bytes, longest allowed is %d", ErrTagInvalid, len(tag), MaxTagLength)
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' ||
			i > 0 && (c == '.' || c == '-')
		if !ok {
			return fmt.Errorf("%w: %q has byte %q at %d", ErrTagInvalid, clip(tag), c, i)
		}
	}
	return nil
}
