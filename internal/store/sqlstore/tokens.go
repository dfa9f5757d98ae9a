package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// CreateOAuthApplication registers an OAuth client under app.OrgID, filling
// ID and CreatedAt. ErrConflict if the client ID is taken.
func (s *Store) CreateOAuthApplication(ctx context.Context, app *store.OAuthApplication) error {
	if app.ClientID == "" {
		return fmt.Errorf("sqlstore: create OAuth application %q: empty client ID", app.Name)
	}
	created := now()
	var id int64
	err := s.w.QueryRowContext(ctx, s.q(`INSERT INTO oauth_applications (org_id, client_id, client_secret_enc, name,
			application_uri, redirect_uri, description, avatar_email, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`), app.OrgID, app.ClientID, app.ClientSecretEnc, app.Name,
		app.ApplicationURI, app.RedirectURI, app.Description, app.AvatarEmail, nanos(created)).Scan(&id)
	if err != nil {
		return fmt.Errorf("sqlstore: create OAuth application %q: %w", app.Name, classify(err))
	}
	app.ID, app.CreatedAt = id, created
	return nil
}

const oauthApplicationColumns = `id, org_id, client_id, client_secret_enc, name, application_uri, redirect_uri,
	description, avatar_email, created_at`

func scanOAuthApplication(sc rowScanner) (store.OAuthApplication, error) {
	var (
		a       store.OAuthApplication
		created int64
	)
	err := sc.Scan(&a.ID, &a.OrgID, &a.ClientID, &a.ClientSecretEnc, &a.Name, &a.ApplicationURI, &a.RedirectURI,
		&a.Description, &a.AvatarEmail, &created)
	a.CreatedAt = fromNanos(created)
	return a, err
}

// GetOAuthApplication finds an application by client ID within orgID, or
// in any organization when orgID is 0 (the OAuth endpoints know only the
// client ID).
func (s *Store) GetOAuthApplication(ctx context.Context, orgID int64, clientID string) (*store.OAuthApplication, error) {
	a, err := scanOAuthApplication(s.r.QueryRowContext(ctx, s.q(`SELECT `+oauthApplicationColumns+` FROM oauth_applications
		WHERE client_id = ? AND (org_id = ? OR ? = 0)`), clientID, orgID, orgID))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get OAuth application %q: %w", clientID, notFoundIfNoRows(err))
	}
	return &a, nil
}

// ListOAuthApplications returns an organization's applications by name.
func (s *Store) ListOAuthApplications(ctx context.Context, orgID int64) ([]store.OAuthApplication, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT `+oauthApplicationColumns+` FROM oauth_applications
		WHERE org_id = ? ORDER BY name, id`), []any{orgID}, scanOAuthApplication)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list OAuth applications of %d: %w", orgID, err)
	}
	return out, nil
}

// UpdateOAuthApplication writes everything but ID, OrgID, ClientID and
// CreatedAt, so that it also serves to reset the client secret.
func (s *Store) UpdateOAuthApplication(ctx context.Context, app *store.OAuthApplication) error {
	err := s.execOne(ctx, `UPDATE oauth_applications SET client_secret_enc = ?, name = ?, application_uri = ?,
		redirect_uri = ?, description = ?, avatar_email = ? WHERE id = ?`, app.ClientSecretEnc, app.Name,
		app.ApplicationURI, app.RedirectURI, app.Description, app.AvatarEmail, app.ID)
	if err != nil {
		return fmt.Errorf("sqlstore: update OAuth application %d: %w", app.ID, err)
	}
	return nil
}

// DeleteOAuthApplication removes an application and the tokens it issued.
func (s *Store) DeleteOAuthApplication(ctx context.Context, id int64) error {
	if err := s.execOne(ctx, `DELETE FROM oauth_applications WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete OAuth application %d: %w", id, err)
	}
	return nil
}

func nullNanos(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: nanos(*t), Valid: true}
}

// CreateAccessToken stores a token (by hash), filling ID and CreatedAt.
// ErrConflict if the hash is already stored.
func (s *Store) CreateAccessToken(ctx context.Context, t *store.AccessToken) error {
	if t.TokenHash == "" {
		return fmt.Errorf("sqlstore: create access token: empty hash")
	}
	for _, sc := range t.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\n") {
			return fmt.Errorf("sqlstore: create access token: invalid scope %q", sc)
		}
	}
	created := now()
	var id int64
	err := s.w.QueryRowContext(ctx, s.q(`INSERT INTO access_tokens (application_id, account_id, token_hash, scopes, created_at,
			expires_at, credential_epoch)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), nullInt(t.ApplicationID), t.AccountID, t.TokenHash,
		strings.Join(t.Scopes, " "), nanos(created), nullNanos(t.ExpiresAt), int64(t.CredentialEpoch)).Scan(&id)
	if err != nil {
		return fmt.Errorf("sqlstore: create access token: %w", classify(err))
	}
	t.ID, t.CreatedAt = id, created
	return nil
}

const accessTokenColumns = `id, application_id, account_id, token_hash, scopes, created_at, expires_at, credential_epoch`

// scanAccessToken reads accessTokenColumns, then the extra columns into
// extra.
func scanAccessToken(sc rowScanner, extra ...any) (store.AccessToken, error) {
	var (
		t       store.AccessToken
		app     sql.NullInt64
		scopes  string
		created int64
		expires sql.NullInt64
		epoch   int64
	)
	if err := sc.Scan(append([]any{&t.ID, &app, &t.AccountID, &t.TokenHash, &scopes, &created, &expires, &epoch}, extra...)...); err != nil {
		return t, err
	}
	t.ApplicationID, t.Scopes, t.CreatedAt, t.CredentialEpoch = app.Int64, strings.Fields(scopes), fromNanos(created), uint64(epoch)
	if expires.Valid {
		e := fromNanos(expires.Int64)
		t.ExpiresAt = &e
	}
	return t, nil
}

// GetAccessTokenByHash finds a token by the hex SHA-256 of its value,
// expired or not: the caller checks ExpiresAt.
func (s *Store) GetAccessTokenByHash(ctx context.Context, hash string) (*store.AccessToken, error) {
	t, err := scanAccessToken(s.r.QueryRowContext(ctx, s.q(`SELECT `+accessTokenColumns+` FROM access_tokens WHERE token_hash = ?`), hash))
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get access token: %w", notFoundIfNoRows(err))
	}
	return &t, nil
}

// ListAccessTokens returns an account's tokens, expired or not, oldest
// first, with their applications' names.
func (s *Store) ListAccessTokens(ctx context.Context, accountID int64) ([]store.AccessToken, error) {
	out, err := queryAll(ctx, s.r, s.q(`SELECT t.id, t.application_id, t.account_id, t.token_hash, t.scopes, t.created_at,
			t.expires_at, t.credential_epoch, COALESCE(app.client_id, ''), COALESCE(app.name, ''), COALESCE(org.name, '')
		FROM access_tokens t LEFT JOIN oauth_applications app ON app.id = t.application_id
		LEFT JOIN accounts org ON org.id = app.org_id
		WHERE t.account_id = ? ORDER BY t.id`), []any{accountID}, func(sc rowScanner) (store.AccessToken, error) {
		var client, name, org string
		t, err := scanAccessToken(sc, &client, &name, &org)
		t.ClientID, t.ApplicationName, t.ApplicationOrg = client, name, org
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list access tokens of %d: %w", accountID, err)
	}
	return out, nil
}

// DeleteAccessToken revokes a token.
func (s *Store) DeleteAccessToken(ctx context.Context, id int64) error {
	if err := s.execOne(ctx, `DELETE FROM access_tokens WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlstore: delete access token %d: %w", id, err)
	}
	return nil
}

// CreateSession stores a web session; CreatedAt is set to now when zero.
// ErrConflict if the hash is already stored.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session) error {
	if sess.IDHash == "" || sess.ExpiresAt.IsZero() {
		return fmt.Errorf("sqlstore: create session: empty hash or expiry")
	}
	created := sess.CreatedAt
	if created.IsZero() {
		created = now()
	}
	_, err := s.w.ExecContext(ctx, s.q(`INSERT INTO sessions (id_hash, account_id, csrf_token, created_at, expires_at, credential_epoch)
		VALUES (?, ?, ?, ?, ?, ?)`), sess.IDHash, sess.AccountID, sess.CSRFToken, nanos(created), nanos(sess.ExpiresAt),
		int64(sess.CredentialEpoch))
	if err != nil {
		return fmt.Errorf("sqlstore: create session: %w", classify(err))
	}
	sess.CreatedAt = created
	return nil
}

// GetSession finds a session by the hash of its cookie value, expired or
// not: the caller checks ExpiresAt.
func (s *Store) GetSession(ctx context.Context, idHash string) (*store.Session, error) {
	var (
		sess                    store.Session
		created, expires, epoch int64
	)
	err := s.r.QueryRowContext(ctx, s.q(`SELECT id_hash, account_id, csrf_token, created_at, expires_at, credential_epoch
		FROM sessions WHERE id_hash = ?`), idHash).Scan(&sess.IDHash, &sess.AccountID, &sess.CSRFToken, &created, &expires, &epoch)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: get session: %w", notFoundIfNoRows(err))
	}
	sess.CreatedAt, sess.ExpiresAt, sess.CredentialEpoch = fromNanos(created), fromNanos(expires), uint64(epoch)
	return &sess, nil
}

// DeleteSession ends a session. ErrNotFound if there was none.
func (s *Store) DeleteSession(ctx context.Context, idHash string) error {
	if err := s.execOne(ctx, `DELETE FROM sessions WHERE id_hash = ?`, idHash); err != nil {
		return fmt.Errorf("sqlstore: delete session: %w", err)
	}
	return nil
}

// DeleteLogins ends every web session and OAuth access token of an
// account. An account without any is not an error.
func (s *Store) DeleteLogins(ctx context.Context, accountID int64) error {
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM sessions WHERE account_id = ?`), accountID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`DELETE FROM access_tokens WHERE account_id = ?`), accountID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlstore: delete logins of %d: %w", accountID, err)
	}
	return nil
}

// BumpCredentialEpoch increments subject's credential epoch, creating it at
// 1, and returns the new value.
func (s *Store) BumpCredentialEpoch(ctx context.Context, subject string) (uint64, error) {
	if subject == "" {
		return 0, fmt.Errorf("sqlstore: bump credential epoch: empty subject")
	}
	var epoch int64
	err := s.writeTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO credential_epochs (subject, epoch, updated_at) VALUES (?, 1, ?)
			ON CONFLICT (subject) DO UPDATE SET epoch = credential_epochs.epoch + 1, updated_at = excluded.updated_at
			RETURNING epoch`), subject, nanos(now())).Scan(&epoch)
	})
	if err != nil {
		return 0, fmt.Errorf("sqlstore: bump credential epoch of %s: %w", subject, err)
	}
	return uint64(epoch), nil
}

// CredentialEpochsSince lists the credential epochs changed at or after
// since, oldest change first.
func (s *Store) CredentialEpochsSince(ctx context.Context, since time.Time) ([]store.CredentialEpoch, error) {
	var from int64
	if !since.IsZero() {
		from = nanos(since)
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT subject, epoch, updated_at, keep_until FROM credential_epochs
		WHERE updated_at >= ? ORDER BY updated_at`), from)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: list credential epochs: %w", err)
	}
	defer rows.Close()
	var out []store.CredentialEpoch
	for rows.Next() {
		var (
			e       store.CredentialEpoch
			epoch   int64
			updated int64
			keep    sql.NullInt64
		)
		if err := rows.Scan(&e.Subject, &epoch, &updated, &keep); err != nil {
			return nil, fmt.Errorf("sqlstore: list credential epochs: %w", err)
		}
		e.Epoch, e.UpdatedAt = uint64(epoch), fromNanos(updated)
		if keep.Valid {
			e.KeepUntil = fromNanos(keep.Int64)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: list credential epochs: %w", err)
	}
	return out, nil
}
