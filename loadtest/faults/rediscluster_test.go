package faults_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisCluster is a Redis Cluster of Debian's redis-server: three masters with a replica each.
type redisCluster struct {
	nodes []*child
	ports []int
}

func startRedisCluster(t *testing.T, dir string) *redisCluster {
	t.Helper()
	c := &redisCluster{}
	for i := range 6 {
		port := freePort(t)
		nodeDir := filepath.Join(dir, strconv.Itoa(port))
		if err := os.MkdirAll(nodeDir, 0o700); err != nil {
			t.Fatal(err)
		}
		args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", nodeDir,
			"--daemonize", "no", "--protected-mode", "yes", "--save", "", "--unixsocket", "",
			"--appendonly", "yes", "--appendfsync", "everysec",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--cluster-replica-validity-factor", "0"}
		n := newChild(t, fmt.Sprintf("redis-%d", i), filepath.Join(dir, fmt.Sprintf("redis-%d.log", i)), "redis-server", args, nil)
		n.start()
		c.nodes, c.ports = append(c.nodes, n), append(c.ports, port)
	}
	for _, p := range c.ports {
		checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			_, err := c.cli(p, "PING")
			return err
		})
	}
	create := []string{"--cluster", "create"}
	for _, p := range c.ports {
		create = append(create, fmt.Sprintf("127.0.0.1:%d", p))
	}
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitOK(t, c.ports[0], 6)
	return c
}

func (c *redisCluster) cli(port int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port)}, args...)...).Output()
	return string(out), err
}

// waitOK waits until the node on port sees the cluster ok with want nodes.
func (c *redisCluster) waitOK(t *testing.T, port, want int) {
	t.Helper()
	checkFor(t, time.Minute, 200*time.Millisecond, func() error {
		info, err := c.cli(port, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", want)) {
			return fmt.Errorf("cluster not ready:\n%s", info)
		}
		return nil
	})
}

// url is the cluster URL of store/redis: the first node, the others as addr parameters.
func (c *redisCluster) url() string {
	u := fmt.Sprintf("redis://127.0.0.1:%d", c.ports[0])
	for i, p := range c.ports[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += fmt.Sprintf("%saddr=127.0.0.1:%d", sep, p)
	}
	return u
}

func (c *redisCluster) restart(t *testing.T, _ time.Duration, _ bool) {
	t.Fatal("restart: the cluster run kills a master instead")
}

// clusterNode is a line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string
	isMaster, failed bool
	port             int
}

func (c *redisCluster) clusterNodes(port int) ([]clusterNode, error) {
	out, err := c.cli(port, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		n := clusterNode{id: f[0], addr: f[1], master: f[3], isMaster: strings.Contains(f[2], "master"),
			failed: strings.Contains(f[2], "fail")}
		hostPort, _, _ := strings.Cut(n.addr, "@")
		_, p, _ := strings.Cut(hostPort, ":")
		n.port, _ = strconv.Atoi(p)
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// killMaster SIGKILLs a master other than the first node and waits until its replica is master and the
// cluster is ok again; the returned function starts the killed node again and waits until it is back.
func (c *redisCluster) killMaster(t *testing.T) func() {
	t.Helper()
	nodes, err := c.clusterNodes(c.ports[0])
	if err != nil {
		t.Fatal(err)
	}
	var victim clusterNode
	for _, n := range nodes {
		if n.isMaster && n.port != c.ports[0] {
			victim = n
			break
		}
	}
	idx := -1
	for i, p := range c.ports {
		if p == victim.port {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("no master to kill in %+v", nodes)
	}
	c.nodes[idx].kill()
	checkFor(t, time.Minute, 200*time.Millisecond, func() error {
		nodes, err := c.clusterNodes(c.ports[0])
		if err != nil {
			return err
		}
		info, err := c.cli(c.ports[0], "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") || !promoted(nodes, victim.id) {
			return fmt.Errorf("replica of %s not promoted yet", victim.addr)
		}
		return nil
	})
	return func() {
		c.nodes[idx].start()
		c.waitOK(t, c.ports[0], 6)
	}
}

// promoted reports whether no node is still a replica of the failed master id.
func promoted(nodes []clusterNode, id string) bool {
	for _, n := range nodes {
		if n.master == id && !n.isMaster {
			return false
		}
	}
	return true
}

func (c *redisCluster) client() redisClient {
	var addrs []string
	for _, p := range c.ports {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", p))
	}
	return cliClient{addrs: addrs, cluster: true}
}
