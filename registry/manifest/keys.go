package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// encoding/json matches object keys to struct fields case-insensitively and
// lets a repeated key overwrite an earlier one. Other clients (and other
// languages) do not, so a payload with "Layers" beside "layers", or two
// "config" keys, would mean one thing to berth's blob checks and garbage
// collector and another to whoever pulls it. checkKeys refuses such payloads
// in the objects Parse reads fields from: the top level and its descriptors.

// keyRole says which fields an object's keys are checked against.
type keyRole uint8

const (
	roleOther    keyRole = iota // not read by Parse; keys unchecked
	roleRoot                    // the manifest object
	roleDesc                    // a descriptor Parse reads
	roleDescList                // an array of descriptors
)

// The JSON names rawManifest and rawDescriptor decode, in the order of the
// bits checkKeys uses to remember which it has seen.
var (
	rootKeys = keyList("schemaVersion", "mediaType", "artifactType", "config", "layers", "manifests", "subject", "annotations")
	descKeys = keyList("mediaType", "digest", "size", "urls", "data")
)

func keyList(names ...string) [][]byte {
	out := make([][]byte, len(names))
	for i, n := range names {
		out[i] = []byte(n)
	}
	return out
}

// valueRole gives the role of the value under a known key of a role-r object.
func valueRole(r keyRole, key []byte) keyRole {
	if r != roleRoot {
		return roleOther
	}
	switch string(key) {
	case "config", "subject":
		return roleDesc
	case "layers", "manifests":
		return roleDescList
	}
	return roleOther
}

type keyFrame struct {
	object    bool
	role      keyRole // for objects: whose keys these are
	elemRole  keyRole // for arrays: the role of each element
	nextRole  keyRole // for objects: the role of the value after the last key
	expectKey bool
	seen      uint16 // bit i set once key i of the role's list was seen
}

// checkKeys walks payload, which json.Unmarshal has already accepted as
// valid JSON, and rejects keys that differ only in case from a field Parse
// reads, and repeats of such a field.
func checkKeys(payload []byte) error {
	var backing [16]keyFrame
	stack := backing[:0]
	for i := 0; i < len(payload); {
		switch c := payload[i]; c {
		case ' ', '\t', '\r', '\n', ':':
			i++
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
			i++
		case '{', '[':
			role := roleRoot
			if n := len(stack); n > 0 {
				if top := &stack[n-1]; top.object {
					role = top.nextRole
				} else {
					role = top.elemRole
				}
			}
			f := keyFrame{object: c == '{', expectKey: c == '{'}
			if c == '{' {
				if role == roleRoot || role == roleDesc {
					f.role = role
				}
			} else if role == roleDescList {
				f.elemRole = roleDesc
			}
			stack = append(stack, f)
			i++
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			i++
		case '"':
			end, escaped, err := stringEnd(payload, i)
			if err != nil {
				return err
			}
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
				top := &stack[n-1]
				top.expectKey = false
				top.nextRole = roleOther
				if top.role != roleOther {
					key := payload[i+1 : end]
					if escaped {
						var s string
						if err := json.Unmarshal(payload[i:end+1], &s); err != nil {
							return fmt.Errorf("%w: %w", ErrInvalid, err)
						}
						key = []byte(s)
					}
					if err := top.checkKey(key); err != nil {
						return err
					}
				}
			}
			i = end + 1
		default: // number, true, false, null
			for i < len(payload) && !endsScalar(payload[i]) {
				i++
			}
		}
	}
	return nil
}

// checkKey records key in f and rejects a case variant or a repeat of a
// field Parse reads.
func (f *keyFrame) checkKey(key []byte) error {
	names := rootKeys
	where := "manifest"
	if f.role == roleDesc {
		names = descKeys
		where = "descriptor"
	}
	for bit, name := range names {
		if !bytes.EqualFold(key, name) {
			continue
		}
		if !bytes.Equal(key, name) {
			return fmt.Errorf("%w: %s key %q differs from %q only in case", ErrInvalid, where, clip(string(key)), name)
		}
		if f.seen&(1<<bit) != 0 {
			return fmt.Errorf("%w: %s key %q repeated", ErrInvalid, where, name)
		}
		f.seen |= 1 << bit
		f.nextRole = valueRole(f.role, key)
		return nil
	}
	return nil
}

// stringEnd returns the index of the quote closing the string that opens
// at start, and whether the string holds escapes.
func stringEnd(b []byte, start int) (end int, escaped bool, err error) {
	for i := start + 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			return i, escaped, nil
		}
	}
	return 0, false, fmt.Errorf("%w: unterminated string", ErrInvalid)
}

// endsScalar reports whether c ends a number or literal.
func endsScalar(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}
