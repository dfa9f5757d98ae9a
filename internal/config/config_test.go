package config

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, yaml string) (*Config, []string, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path, t.TempDir())
}

// A migrating user learns which keys are ignored: unknown ones, and the
// Quay keys berth recognises but does not read yet, each by name.
func TestLoadNamesUnknownAndNotSupportedKeys(t *testing.T) {
	cfg, unknown, err := load(t, `
SERVER_HOSTNAME: registry.example.com
REGISTRY_TOKEN_LIFETIME_S: 600
FEATURE_QUOTA_MANAGEMENT: true
DEFAULT_TAG_EXPIRATION: 2w
FEATURE_MADE_UP: true
NOT_A_KEY: 1
`)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"FEATURE_MADE_UP", "NOT_A_KEY"}; !reflect.DeepEqual(unknown, want) {
		t.Errorf("unknown = %v, want %v", unknown, want)
	}
	if got, want := cfg.NotSupportedKeys(), []string{"DEFAULT_TAG_EXPIRATION", "FEATURE_QUOTA_MANAGEMENT"}; !reflect.DeepEqual(got, want) {
		t.Errorf("not supported = %v, want %v", got, want)
	}
	if cfg.ServerHostname != "registry.example.com" || cfg.TokenLifetime != 10*time.Minute {
		t.Errorf("honoured keys not read: %q %v", cfg.ServerHostname, cfg.TokenLifetime)
	}
}

// Values berth cannot honour stop the server, and the error names the key,
// the value and why.
func TestRefusedValuesStopWithTheReason(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"S3 storage", `
DISTRIBUTED_STORAGE_CONFIG:
  default:
    - S3Storage
    - s3_bucket: b
      storage_path: /registry
DISTRIBUTED_STORAGE_PREFERENCE: [default]
`, []string{"DISTRIBUTED_STORAGE_CONFIG", "S3Storage", "no object storage driver"}},
		{"ec2 executor", `
BUILD_MANAGER:
  - ephemeral
  - EXECUTORS:
      - EXECUTOR: ec2
        EC2_INSTANCE_TYPE: m5.large
`, []string{"BUILD_MANAGER", "EXECUTOR ec2", "would never run"}},
		{"LDAP", "AUTHENTICATION_TYPE: LDAP\n", []string{"AUTHENTICATION_TYPE", "LDAP", "own database only"}},
		{"builds off", "FEATURE_BUILD_SUPPORT: false\n", []string{"FEATURE_BUILD_SUPPORT", "false", "cannot be turned off"}},
		{"OCI off", "FEATURE_GENERAL_OCI_SUPPORT: false\n", []string{"FEATURE_GENERAL_OCI_SUPPORT", "cannot be turned off"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := load(t, tc.yaml)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The values the table honours load without a word.
func TestHonouredValuesOfRefusedKeysLoad(t *testing.T) {
	_, unknown, err := load(t, `
AUTHENTICATION_TYPE: Database
FEATURE_BUILD_SUPPORT: true
FEATURE_GENERAL_OCI_SUPPORT: true
DISTRIBUTED_STORAGE_CONFIG:
  default:
    - LocalStorage
    - storage_path: /var/lib/berth/storage
BUILD_MANAGER:
  - ephemeral
  - EXECUTORS:
      - EXECUTOR: local
`)
	if err != nil || len(unknown) > 0 {
		t.Fatalf("err %v, unknown %v", err, unknown)
	}
}

func TestExternalURL(t *testing.T) {
	plain := httptest.NewRequest(http.MethodGet, "http://from-host:8080/v2/", nil)
	overTLS := httptest.NewRequest(http.MethodGet, "https://from-host/v2/", nil)
	tests := []struct {
		name string
		cfg  Config
		r    *http.Request
		want string
	}{
		{"request over http", Config{}, plain, "http://from-host:8080"},
		{"request over TLS", Config{}, overTLS, "https://from-host"},
		{"hostname", Config{ServerHostname: "quay.example"}, overTLS, "http://quay.example"},
		{"hostname, serving TLS", Config{ServerHostname: "quay.example", TLSCert: "c.pem"}, plain, "https://quay.example"},
		{"hostname behind a TLS proxy", Config{ServerHostname: "quay.example", PreferredURLScheme: "https"}, plain, "https://quay.example"},
		{"preferred scheme wins over TLS", Config{ServerHostname: "quay.example", PreferredURLScheme: "http", TLSCert: "c.pem"}, plain, "http://quay.example"},
	}
	for _, tt := range tests {
		if got := tt.cfg.ExternalURL(tt.r); got != tt.want {
			t.Errorf("%s: ExternalURL = %q, want %q", tt.name, got, tt.want)
		}
	}
}
