package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// authFile is a credentials file podman, skopeo, buildah or docker writes.
type authFile struct {
	path string
	// legacy is the old ~/.dockercfg layout: the host map at the top level
	// instead of under "auths".
	legacy bool
}

// authFiles lists the files containers-auth.json(5) reads, in its order:
// $REGISTRY_AUTH_FILE or else the primary file
// ($XDG_RUNTIME_DIR/containers/auth.json, or /run/containers/<uid>/auth.json
// where podman writes it when XDG_RUNTIME_DIR is unset: root after `su -`,
// CI jobs, containers), then $XDG_CONFIG_HOME/containers/auth.json
// (~/.config by default), then docker's $DOCKER_CONFIG/config.json (or
// ~/.docker/config.json) and ~/.dockercfg.
func authFiles(getenv func(string) string, uid int) []authFile {
	var files []authFile
	switch {
	case getenv("REGISTRY_AUTH_FILE") != "":
		files = append(files, authFile{path: getenv("REGISTRY_AUTH_FILE")})
	case getenv("XDG_RUNTIME_DIR") != "":
		files = append(files, authFile{path: filepath.Join(getenv("XDG_RUNTIME_DIR"), "containers", "auth.json")})
	default:
		files = append(files, authFile{path: filepath.Join("/run/containers", strconv.Itoa(uid), "auth.json")})
	}
	home := getenv("HOME")
	switch {
	case getenv("XDG_CONFIG_HOME") != "":
		files = append(files, authFile{path: filepath.Join(getenv("XDG_CONFIG_HOME"), "containers", "auth.json")})
	case home != "":
		files = append(files, authFile{path: filepath.Join(home, ".config", "containers", "auth.json")})
	}
	switch {
	case getenv("DOCKER_CONFIG") != "":
		files = append(files, authFile{path: filepath.Join(getenv("DOCKER_CONFIG"), "config.json")})
	case home != "":
		files = append(files, authFile{path: filepath.Join(home, ".docker", "config.json")})
	}
	if home != "" {
		files = append(files, authFile{path: filepath.Join(home, ".dockercfg"), legacy: true})
	}
	return files
}

// storedLogin is a login found in a credentials file.
type storedLogin struct {
	header string // the Authorization header value
	file   string
}

// findLogin returns the first login for repo (namespace/name) on host in
// files: in each file the most specific key wins (host/namespace/name, then
// host/namespace, then host), as podman matches them. A file that does not
// exist is skipped; nil is no login anywhere.
func findLogin(files []authFile, host, repo string) (*storedLogin, error) {
	ns, _, _ := strings.Cut(repo, "/")
	wanted := []string{host + "/" + repo, host + "/" + ns, host}
	for _, f := range files {
		b, err := os.ReadFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading credentials: %w", err)
		}
		var entries map[string]struct {
			Auth string `json:"auth"`
		}
		if f.legacy {
			err = json.Unmarshal(b, &entries)
		} else {
			var doc struct {
				Auths map[string]struct {
					Auth string `json:"auth"`
				} `json:"auths"`
			}
			err = json.Unmarshal(b, &doc)
			entries = doc.Auths
		}
		if err != nil {
			return nil, fmt.Errorf("credentials file %s is not valid JSON: %w", f.path, err)
		}
		byKey := map[string]string{}
		for key, e := range entries {
			if e.Auth != "" {
				byKey[strings.ToLower(normalizeAuthKey(key, f.legacy))] = e.Auth
			}
		}
		for _, w := range wanted {
			a, ok := byKey[strings.ToLower(w)]
			if !ok {
				continue
			}
			plain, err := base64.StdEncoding.DecodeString(a)
			if err != nil || !strings.Contains(string(plain), ":") {
				return nil, fmt.Errorf("the login for %s in %s is not base64 of user:password", w, f.path)
			}
			return &storedLogin{header: "Basic " + a, file: f.path}, nil
		}
	}
	return nil, nil
}

// normalizeAuthKey drops a URL scheme and, for docker's keys
// ("https://host/v1/") and every legacy key, the path.
func normalizeAuthKey(key string, legacy bool) string {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+3:]
	}
	key = strings.TrimSuffix(key, "/")
	host, path, _ := strings.Cut(key, "/")
	if legacy || path == "v1" || path == "v2" {
		return host
	}
	return key
}
