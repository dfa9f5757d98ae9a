package api

import (
	"time"

	"github.com/berth-dev/berth/internal/config"
)

// DefaultAccessTokenLifetime is how long an OAuth access token works when
// ACCESS_TOKEN_LIFETIME_S is unset. Quay's guide says nothing of token
// expiry; 90 days keeps a CI job's token working for a quarter, and ends
// one forgotten in a script or a leaked log without anyone acting. Set 0
// for tokens that never expire.
const DefaultAccessTokenLifetime = 90 * 24 * time.Hour

// AccessTokenLifetime reads config ACCESS_TOKEN_LIFETIME_S: seconds, 0 for
// no expiry.
func AccessTokenLifetime(cfg *config.Config) (time.Duration, error) {
	n, err := config.NonNegativeInt(cfg.Raw, "ACCESS_TOKEN_LIFETIME_S", int(DefaultAccessTokenLifetime/time.Second))
	return time.Duration(n) * time.Second, err
}

// Filedrop defaults: per account, 100 upload URLs an hour and 10 GiB of
// uploaded contexts a day; enough for a script building many images, far
// from what filling a disk takes.
const (
	DefaultFiledropRateLimit  = 100
	DefaultFiledropQuotaBytes = 10 << 30
)

// FiledropLimits bound what one account uploads through filedrop.
type FiledropLimits struct {
	// PerHour is how many upload URLs an account may get in an hour.
	PerHour int
	// QuotaBytes is how many bytes of contexts an account may upload in
	// 24 hours (counting those the server still holds: an unused upload
	// purged since counts no more).
	QuotaBytes int64
}

// FiledropLimitsFromConfig reads FILEDROP_RATE_LIMIT (upload URLs per
// account per hour) and FILEDROP_QUOTA_BYTES (bytes per account per 24
// hours).
func FiledropLimitsFromConfig(cfg *config.Config) (FiledropLimits, error) {
	rate, err := config.NonNegativeInt(cfg.Raw, "FILEDROP_RATE_LIMIT", DefaultFiledropRateLimit)
	if err != nil {
		return FiledropLimits{}, err
	}
	quota, err := config.NonNegativeInt(cfg.Raw, "FILEDROP_QUOTA_BYTES", DefaultFiledropQuotaBytes)
	if err != nil {
		return FiledropLimits{}, err
	}
	return FiledropLimits{PerHour: rate, QuotaBytes: int64(quota)}, nil
}
