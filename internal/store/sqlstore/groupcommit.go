package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
)

// maxGroup bounds how many write transactions share one commit.
const maxGroup = 64

// groupCommitter runs the write transactions of an SQLite store. With
// synchronous=FULL every commit costs an fsync of the WAL, and SQLite has a
// single writer, so concurrent writers would queue behind each other's
// fsyncs. The committer instead takes every transaction waiting at that
// moment and runs them in one database transaction, each inside its own
// savepoint: a transaction whose fn fails is rolled back to its savepoint
// alone, and the rest share one commit and one fsync. A lone writer pays
// what it paid before.
type groupCommitter struct {
	db   *sql.DB
	ops  chan *writeOp
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type writeOp struct {
	ctx    context.Context
	fn     func(tx *sql.Tx) error
	result chan error
}

var errStoreClosed = errors.New("sqlstore: store closed")

func newGroupCommitter(db *sql.DB) *groupCommitter {
	c := &groupCommitter{db: db, ops: make(chan *writeOp), stop: make(chan struct{})}
	c.wg.Add(1)
	go c.run()
	return c
}

// do runs fn in a write transaction and returns once that transaction is
// durably committed (nil) or rolled back (fn's error or the commit's).
func (c *groupCommitter) do(ctx context.Context, fn func(tx *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, fn: fn, result: make(chan error, 1)}
	select {
	case c.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stop:
		return errStoreClosed
	}
	return <-op.result
}

// close stops the committer after the batch in flight; later calls wait too.
func (c *groupCommitter) close() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func (c *groupCommitter) run() {
	defer c.wg.Done()
	for {
		var first *writeOp
		select {
		case first = <-c.ops:
		case <-c.stop:
			return
		}
		batch := []*writeOp{first}
	gather:
		for len(batch) < maxGroup {
			select {
			case op := <-c.ops:
				batch = append(batch, op)
			default:
				break gather
			}
		}
		c.commit(batch)
	}
}

// commit runs batch in one transaction and delivers each op's result.
func (c *groupCommitter) commit(batch []*writeOp) {
	results := make([]error, len(batch))
	err := c.runBatch(batch, results)
	for i, op := range batch {
		if err != nil && results[i] == nil {
			results[i] = err
		}
		op.result <- results[i]
	}
}

// runBatch returns an error that fails every op not already failed: the
// transaction could not begin, a savepoint statement failed, or the commit.
func (c *groupCommitter) runBatch(batch []*writeOp, results []error) error {
	// The transaction outlives any one caller's context; each fn still
	// runs its statements with its own.
	ctx := context.Background()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT op"); err != nil {
			tx.Rollback()
			return fmt.Errorf("savepoint: %w", err)
		}
		if err := op.fn(tx); err != nil {
			results[i] = err
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO op"); rerr != nil {
				tx.Rollback()
				return fmt.Errorf("rollback to savepoint: %w", rerr)
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE op"); err != nil {
			tx.Rollback()
			return fmt.Errorf("release savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
