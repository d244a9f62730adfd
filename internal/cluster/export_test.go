package cluster

import (
	"context"
	"time"
)

// SetPause replaces the wait between asks of a router NATS says nothing
// listens for (ask), before c serves any request.
func SetPause(c *Cluster, f func(context.Context, time.Duration) error) { c.pause = f }

// NoResponderWaits are the pauses ask makes.
var NoResponderWaits = noResponderWaits
