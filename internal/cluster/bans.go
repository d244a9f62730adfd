package cluster

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bans are the operator's: a node banned at one router (/admin/bans) is
// banned at every router of the network, and a ban lifted at one is
// lifted everywhere. They travel through a key-value bucket of their own,
// one key per banned node id (base64url, as ids may hold characters keys
// may not), with no expiry: a router that joins later gets them all. Each
// router also keeps the bans it applied in its own records (--records),
// so a ban outlives NATS. The routers of one network trust each other:
// any of them can ban a node for all.

// bansBucket names the bans' bucket.
const bansBucket = "idleclaw_bans"

// maxSharedBans bounds the bans taken from the bucket: past it a ban put
// by another router is not applied here (and logged).
const maxSharedBans = 1 << 16

func banKey(id string) string { return base64.RawURLEncoding.EncodeToString([]byte(id)) }

func banID(key string) (string, bool) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(key)
	if err != nil || len(b) == 0 || len(b) > 64 {
		return "", false
	}
	return string(b), true
}

// bansKV finds or makes the bans' bucket.
func (c *Cluster) bansKV(ctx context.Context) (jetstream.KeyValue, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       bansBucket,
		Description:  "idleclaw routers: node ids the operators banned",
		History:      1,
		MaxValueSize: 128,
		Storage:      jetstream.MemoryStorage,
		Replicas:     c.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", bansBucket, err)
	}
	return kv, nil
}

// ShareBan tells the other routers that the operator banned id here
// (banned) or lifted its ban.
func (c *Cluster) ShareBan(ctx context.Context, id string, banned bool) error {
	if !c.nc.IsConnected() {
		return errors.New("share ban: not connected to nats")
	}
	kv, err := c.bansKV(ctx)
	if err != nil {
		return fmt.Errorf("share ban: %w", err)
	}
	if banned {
		_, err = kv.Put(ctx, banKey(id), []byte(c.cfg.RouterID))
	} else {
		err = kv.Delete(ctx, banKey(id))
	}
	if err != nil {
		return fmt.Errorf("share ban: %w", err)
	}
	return nil
}

// watchAll watches every key of the bucket open opens, once NATS is
// connected: the bans' and the records' watches.
func (c *Cluster) watchAll(ctx context.Context, open func(context.Context) (jetstream.KeyValue, error), what string) (jetstream.KeyWatcher, error) {
	if !c.nc.IsConnected() {
		return nil, errors.New("not connected")
	}
	kv, err := open(ctx)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return w, nil
}

// bansLoop applies the network's bans here until ctx ends, watching the
// bucket again whenever the watch is lost.
func (c *Cluster) bansLoop(ctx context.Context) {
	applied := map[string]bool{} // ids banned here through the bucket
	c.keepWatching(ctx, "watch bans", c.cfg.Interval, func(ctx context.Context) error { return c.watchBans(ctx, applied) })
}

func (c *Cluster) watchBans(ctx context.Context, applied map[string]bool) error {
	w, err := c.watchAll(ctx, c.bansKV, "watch bans")
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("bans watch ended")
			}
			if e == nil {
				continue // the end of the replay
			}
			id, ok := banID(e.Key())
			if !ok {
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				if applied[id] {
					continue
				}
				if len(applied) >= maxSharedBans {
					c.log.Warn("too many shared bans; not applying more", "max", maxSharedBans)
					continue
				}
				applied[id] = true
				c.hub.Ban(id)
				c.log.Info("node banned by the network", "node_id", id, "router", string(e.Value()))
			case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
				if applied[id] || c.hub.Banned(id) {
					delete(applied, id)
					c.hub.Unban(id)
				}
			}
		}
	}
}
