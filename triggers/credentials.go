package triggers

import (
	"fmt"
	"net/url"
)

// Credential is one entry of Quay's config.credentials list.
type Credential struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Credential names, as Quay's UI shows them.
const (
	CredentialSSHPublicKey = "SSH Public Key"
	CredentialWebhookURL   = "Webhook Endpoint URL"
)

// Credentials is a trigger's config.credentials: what its owner installs on
// the git server. custom-git needs both the deploy key and the webhook URL;
// forge triggers install both themselves at activation, and show them so the
// owner can check what was installed. Empty values are left out; an unknown
// service has none.
func Credentials(service, publicKey, webhookURL string) []Credential {
	if _, err := ForService(service); err != nil {
		return nil
	}
	creds := []Credential{}
	if publicKey != "" {
		creds = append(creds, Credential{Name: CredentialSSHPublicKey, Value: publicKey})
	}
	if webhookURL != "" {
		creds = append(creds, Credential{Name: CredentialWebhookURL, Value: webhookURL})
	}
	return creds
}

// WebhookURL is a trigger's webhook endpoint,
// <scheme>://$token:<secret>@<host>/webhooks/push/trigger/<uuid>; an empty
// secret leaves the credentials out (forges that sign their deliveries need
// none in the URL).
func WebhookURL(scheme, host, triggerUUID, secret string) string {
	u := url.URL{Scheme: scheme, Host: host, Path: fmt.Sprintf("/webhooks/push/trigger/%s", triggerUUID)}
	if secret != "" {
		u.User = url.UserPassword(TokenUsername, secret)
	}
	return u.String()
}
