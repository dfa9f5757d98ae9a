package config

import (
	"fmt"
	"slices"
	"strings"
)

// Status is what berth does with a config.yaml key it knows.
type Status string

// Key statuses. A user migrating from Quay sees each one: honoured keys
// work, the others are named at start, as a warning or as the error that
// stops the server.
const (
	// Honoured: berth reads the key and acts on it.
	Honoured Status = "honoured"
	// NotSupportedYet: a Quay key berth accepts but does not read yet;
	// serve names it in a warning at start.
	NotSupportedYet Status = "recognised, not supported yet"
	// Refused: some values of the key stop the server, with the reason
	// (Key.Note); the values in Key.Only are honoured.
	Refused Status = "refused"
)

// Key is one config.yaml key berth knows: Quay's keys and berth's own.
type Key struct {
	Name   string
	Status Status
	// ReadBy is the package (module-relative path) that reads the key
	// when it is honoured or partly refused; keys_test.go checks it does.
	ReadBy string
	// Only, for a Refused key, lists the values (as fmt prints them) berth
	// honours; any other value stops the server.
	Only []string
	// Note says what the key does in berth, why it is not read yet, or why
	// values are refused. docs/config.md shows it.
	Note string
}

// Keys is every config.yaml key berth knows, with its status. Keys not
// listed are reported as unknown at start. docs/config.md carries the same
// table (keys_test.go keeps them in step).
var Keys = []Key{
	// Server and metadata.
	{Name: "SERVER_HOSTNAME", Status: Honoured, ReadBy: "internal/config", Note: "The host in token realms, upload locations and every URL berth answers with."},
	{Name: "PREFERRED_URL_SCHEME", Status: Honoured, ReadBy: "internal/config", Note: "http or https; https also marks the session cookie Secure."},
	{Name: "DB_URI", Status: Honoured, ReadBy: "internal/config", Note: "PostgreSQL for several servers; SQLite in the data directory when absent."},
	{Name: "SUPER_USERS", Status: Honoured, ReadBy: "internal/config", Note: "Account names with superuser rights."},
	{Name: "FEATURE_USER_INITIALIZE", Status: Honoured, ReadBy: "api", Note: "POST /api/v1/user/initialize creates the first superuser."},
	{Name: "DATABASE_SECRET_KEY", Status: Honoured, ReadBy: "api", Note: "Seals stored secrets; every server sharing the database needs the same one."},
	{Name: "INSTANCE_SERVICE_KEY_LOCATION", Status: Honoured, ReadBy: "internal/config", Note: "The Ed25519 key file that signs registry tokens."},
	{Name: "REGISTRY_TOKEN_LIFETIME_S", Status: Honoured, ReadBy: "internal/config", Note: "berth's key: registry bearer token lifetime in seconds (at least 60)."},
	{Name: "ACCESS_TOKEN_LIFETIME_S", Status: Honoured, ReadBy: "api", Note: "berth's key: OAuth access token lifetime in seconds, 0 for none."},
	{Name: "ROBOTS_DISALLOW", Status: Honoured, ReadBy: "api", Note: "Robot accounts cannot log in."},
	{Name: "BROWSER_API_CALLS_XHR_ONLY", Status: Honoured, ReadBy: "api", Note: "Browser API calls need X-Requested-With."},
	{Name: "AUTHENTICATION_TYPE", Status: Refused, ReadBy: "internal/config", Only: []string{"Database"},
		Note: "berth authenticates against its own database only; LDAP, OIDC, Keystone and external JWT are not supported, and accepting them would let the wrong people in or keep the right ones out."},
	{Name: "SECRET_KEY", Status: NotSupportedYet, Note: "Not read: berth's sessions and secrets use DATABASE_SECRET_KEY."},
	{Name: "REGISTRY_TITLE", Status: NotSupportedYet, Note: "Not read: berth has no web UI yet."},
	{Name: "REGISTRY_TITLE_SHORT", Status: NotSupportedYet, Note: "Not read: berth has no web UI yet."},

	// Storage.
	{Name: "DISTRIBUTED_STORAGE_CONFIG", Status: Refused, ReadBy: "internal/config",
		Note: "The preferred location's driver: LocalStorage (storage_path) is honoured; Quay's object storage drivers (S3Storage, GoogleCloudStorage, AzureStorage, RadosGWStorage, SwiftStorage, …) stop the server, since berth has no object storage driver yet and would otherwise store blobs somewhere the admin did not choose."},
	{Name: "DISTRIBUTED_STORAGE_PREFERENCE", Status: Honoured, ReadBy: "internal/config", Note: "Its first location is the one berth uses."},
	{Name: "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS", Status: NotSupportedYet, Note: "Not read: berth stores blobs in one location, without replication."},

	// Registry features.
	{Name: "FEATURE_GENERAL_OCI_SUPPORT", Status: Refused, ReadBy: "internal/config", Only: []string{"true"}, Note: "berth always serves OCI images and artifacts; it cannot be turned off."},
	{Name: "FEATURE_HELM_OCI_SUPPORT", Status: Refused, ReadBy: "internal/config", Only: []string{"true"}, Note: "berth always stores Helm charts as OCI artifacts; it cannot be turned off."},
	{Name: "FEATURE_REFERRERS_API", Status: Refused, ReadBy: "internal/config", Only: []string{"true"}, Note: "berth always serves the OCI referrers API; it cannot be turned off."},
	{Name: "ALLOWED_OCI_ARTIFACT_TYPES", Status: NotSupportedYet, Note: "Not read: berth accepts every artifact media type."},
	{Name: "IGNORE_UNKNOWN_MEDIATYPES", Status: NotSupportedYet, Note: "Not read: berth accepts every artifact media type."},
	{Name: "CREATE_PRIVATE_REPO_ON_PUSH", Status: NotSupportedYet, Note: "Not read: a push creates the repository, private."},
	{Name: "CREATE_NAMESPACE_ON_PUSH", Status: NotSupportedYet, Note: "Not read: a push never creates a namespace."},
	{Name: "FEATURE_QUOTA_MANAGEMENT", Status: NotSupportedYet, Note: "Not read: berth has no storage quotas yet."},
	{Name: "DEFAULT_SYSTEM_REJECT_QUOTA_BYTES", Status: NotSupportedYet, Note: "Not read: berth has no storage quotas yet."},
	{Name: "QUOTA_BACKFILL", Status: NotSupportedYet, Note: "Not read: berth has no storage quotas yet."},
	{Name: "QUOTA_TOTAL_DELAY_SECONDS", Status: NotSupportedYet, Note: "Not read: berth has no storage quotas yet."},
	{Name: "FEATURE_GARBAGE_COLLECTION", Status: NotSupportedYet, Note: "Not read: berth has no garbage collector yet; unreferenced blobs stay."},
	{Name: "FEATURE_AUTO_PRUNE", Status: NotSupportedYet, Note: "Not read: berth does not prune tags yet."},
	{Name: "PERMANENTLY_DELETE_TAGS", Status: NotSupportedYet, Note: "Not read: a deleted tag is gone at once; there is no time machine."},
	{Name: "RESET_CHILD_MANIFEST_EXPIRATION", Status: NotSupportedYet, Note: "Not read: berth has no tag expiration yet."},
	{Name: "TAG_EXPIRATION_OPTIONS", Status: NotSupportedYet, Note: "Not read: berth has no tag expiration yet."},
	{Name: "DEFAULT_TAG_EXPIRATION", Status: NotSupportedYet, Note: "Not read: berth has no tag expiration yet."},
	{Name: "NOTIFICATION_TASK_RUN_MINIMUM_INTERVAL_MINUTES", Status: NotSupportedYet, Note: "Not read: berth sends no repository notifications yet."},
	{Name: "FEATURE_PROXY_CACHE", Status: NotSupportedYet, Note: "Not read: berth has no pull-through cache yet."},
	{Name: "FEATURE_REPO_MIRROR", Status: NotSupportedYet, Note: "Not read: berth has no repository mirroring yet."},

	// Builds.
	{Name: "FEATURE_BUILD_SUPPORT", Status: Refused, ReadBy: "internal/config", Only: []string{"true"}, Note: "berth always serves builds; they cannot be turned off."},
	{Name: "FEATURE_READER_BUILD_LOGS", Status: Honoured, ReadBy: "api", Note: "Readers of a repository, not only writers, see its build logs."},
	{Name: "BUILD_MANAGER", Status: Refused, ReadBy: "cmd/berth",
		Note: "The ephemeral build manager with the local (Quay's popen) and kubernetes (Quay's kubernetesPodman) executors is honoured, each entry with its ENGINE; EXECUTOR ec2 stops the server, since berth has no such executor and its builds would never run."},
	{Name: "BUILDMAN_HOSTNAME", Status: NotSupportedYet, Note: "Not read at the top level: set it in a kubernetes EXECUTORS entry, where it is the manager's gRPC address as pods reach it (local workers reach the manager on this machine)."},
	{Name: "JOB_REGISTRATION_TIMEOUT", Status: NotSupportedYet, Note: "Not read: a worker that does not register ends with the build's time limit."},
	{Name: "BUILD_CONTEXT_MAX_BYTES", Status: Honoured, ReadBy: "buildmanager", Note: "berth's key: the most bytes of a build context as sent."},
	{Name: "BUILD_CONTEXT_MAX_UNPACKED_BYTES", Status: Honoured, ReadBy: "buildmanager", Note: "berth's key: the most bytes a build context's files may unpack to."},
	{Name: "BUILD_CONTEXT_MAX_COMPRESSION_RATIO", Status: Honoured, ReadBy: "buildmanager", Note: "berth's key: the most an archive may unpack to per byte of it."},
	{Name: "FILEDROP_RATE_LIMIT", Status: Honoured, ReadBy: "api", Note: "berth's key: upload URLs per account an hour."},
	{Name: "FILEDROP_QUOTA_BYTES", Status: Honoured, ReadBy: "api", Note: "berth's key: bytes uploaded per account in 24 hours."},
	{Name: "BUILD_ALLOWED_NETWORKS", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: networks RUN steps may reach."},
	{Name: "GITHUB_TRIGGER_CONFIG", Status: Honoured, ReadBy: "triggers", Note: "GitHub API access for build triggers."},
	{Name: "GITLAB_TRIGGER_CONFIG", Status: Honoured, ReadBy: "triggers", Note: "GitLab API access for build triggers."},
	{Name: "BITBUCKET_TRIGGER_CONFIG", Status: Honoured, ReadBy: "triggers", Note: "Bitbucket API access for build triggers; clone links come from its API."},
	{Name: "WEBHOOK_REPLAY_WINDOW_SECONDS", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: a webhook body seen within this window is a replay."},

	// Network and limits.
	{Name: "OUTBOUND_ALLOWED_NETWORKS", Status: Honoured, ReadBy: "internal/egress", Note: "berth's key: private networks berth may fetch from on a user's behalf."},
	{Name: "METRICS_LISTEN", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: serve /metrics alone on this address."},
	{Name: "REQUEST_BODY_MINIMUM_BYTES_PER_SECOND", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: the slowest average a request body may arrive at."},
	{Name: "REQUEST_BODY_IDLE_TIMEOUT_SECONDS", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: the longest pause in a request body."},
	{Name: "MAXIMUM_CONCURRENT_UPLOADS_PER_ACCOUNT", Status: Honoured, ReadBy: "cmd/berth", Note: "berth's key: blob uploads one account may have in flight."},
}

// refusedStorageDrivers are Quay's storage drivers berth has no
// implementation of: choosing one stops the server rather than storing
// blobs on the local disk instead.
var refusedStorageDrivers = []string{
	"S3Storage", "STSS3Storage", "CloudFrontedS3Storage", "CloudFlareStorage", "GoogleCloudStorage",
	"AzureStorage", "RadosGWStorage", "RHOCSStorage", "SwiftStorage", "IBMCloudStorage", "MultiCDNStorage",
}

// refusedExecutors are Quay's build executors berth has no implementation
// of: configuring one stops the server rather than queueing builds nothing
// runs.
var refusedExecutors = []string{"ec2"}

var keysByName = func() map[string]*Key {
	m := make(map[string]*Key, len(Keys))
	for i := range Keys {
		m[Keys[i].Name] = &Keys[i]
	}
	return m
}()

// LookupKey returns the table's entry for name.
func LookupKey(name string) (Key, bool) {
	k, ok := keysByName[name]
	if !ok {
		return Key{}, false
	}
	return *k, true
}

// checkRefused stops on a value the table refuses, naming the key, the
// value and the reason.
func (c *Config) checkRefused() error {
	for _, k := range Keys {
		v, ok := c.Raw[k.Name]
		if !ok || v == nil || len(k.Only) == 0 {
			continue
		}
		if !slices.Contains(k.Only, fmt.Sprint(v)) {
			return fmt.Errorf("config key %s: %v is refused (only %s): %s", k.Name, v, strings.Join(k.Only, ", "), k.Note)
		}
	}
	if len(c.DistributedStorageConfig) > 0 {
		name, _, err := c.StorageDriver()
		if err != nil {
			return err
		}
		if slices.Contains(refusedStorageDrivers, name) {
			return fmt.Errorf("config key DISTRIBUTED_STORAGE_CONFIG: storage driver %s is refused: berth has no object storage driver yet, only LocalStorage, and would otherwise keep blobs somewhere you did not choose", name)
		}
	}
	for _, kind := range executorKinds(c.Raw["BUILD_MANAGER"]) {
		if slices.Contains(refusedExecutors, kind) {
			return fmt.Errorf("config key BUILD_MANAGER: EXECUTOR %s is refused: berth has no %s executor, only local (Quay's popen) and kubernetes (Quay's kubernetesPodman), and builds queued for it would never run", kind, kind)
		}
	}
	return nil
}

// executorKinds lists the EXECUTOR of each entry of BUILD_MANAGER's
// EXECUTORS; the build manager checks the shape itself.
func executorKinds(raw any) []string {
	pair, _ := raw.([]any)
	if len(pair) != 2 {
		return nil
	}
	settings, _ := pair[1].(map[string]any)
	list, _ := settings["EXECUTORS"].([]any)
	var kinds []string
	for _, e := range list {
		em, _ := e.(map[string]any)
		if kind, ok := em["EXECUTOR"].(string); ok {
			kinds = append(kinds, kind)
		}
	}
	return kinds
}
