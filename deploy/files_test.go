package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v4"
)

// run runs a command and fails the test with its output when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestPromtoolCheck(t *testing.T) {
	run(t, "promtool", "check", "rules", "prometheus/rules.yml", "prometheus/alerts.yml")
	// check config also checks the rule files it names.
	run(t, "promtool", "check", "config", "prometheus/prometheus.yml")
}

func TestPromtoolUnitTests(t *testing.T) {
	out := run(t, "promtool", "test", "rules", "prometheus/tests.yml")
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %s", out)
	}
}

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
			Labels      map[string]string `yaml:"labels"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// Every alert has a severity, a summary, a runbook_url pointing at its own section of
// docs/operations.md (which exists), and a unit test in tests.yml.
func TestAlertsHaveRunbooksAndTests(t *testing.T) {
	var alerts ruleFile
	readYAML(t, "prometheus/alerts.yml", &alerts)
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile("prometheus/tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	headings := make(map[string]bool)
	for _, line := range strings.Split(string(ops), "\n") {
		if strings.HasPrefix(line, "#") {
			headings[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	n := 0
	for _, g := range alerts.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: a recording rule in alerts.yml", g.Name)
				continue
			}
			n++
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: no summary or description", r.Alert)
			}
			anchor := strings.ToLower(r.Alert)
			if want := "https://github.com/livedrops/livedrops/blob/main/docs/operations.md#" + anchor; r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !headings[anchor] {
				t.Errorf("%s: docs/operations.md has no section %q", r.Alert, r.Alert)
			}
			if !bytes.Contains(tests, []byte("alertname: "+r.Alert+"\n")) {
				t.Errorf("%s: no alert_rule_test in prometheus/tests.yml", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts in alerts.yml")
	}
}

// githubAnchor is the id GitHub gives a Markdown heading: lower case, spaces to dashes, punctuation
// dropped.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// compose is the part of `docker-compose config` these tests read.
type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// loadCompose returns docker-compose.yml as docker-compose resolves it (anchors, merges, defaults).
func loadCompose(t *testing.T) compose {
	t.Helper()
	cmd := exec.Command("docker-compose", "-f", "../docker-compose.yml", "config")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, stderr.Bytes())
	}
	var c compose
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("docker-compose config: %v", err)
	}
	return c
}

// roles maps each LiveDrops role to its compose services ("api" → api-1, api-2).
func (c compose) roles() map[string][]string {
	out := make(map[string][]string)
	for name, s := range c.Services {
		if len(s.Command) == 1 && strings.HasPrefix(s.Image, "livedrops") {
			switch role := s.Command[0]; role {
			case "api", "hub", "worker", "all":
				out[role] = append(out[role], name)
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// servicesMounting lists the services that mount the host path (relative to the repository).
func (c compose) servicesMounting(path string) []string {
	var out []string
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			if strings.Contains(strings.SplitN(v, ":", 2)[0], path) {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// The multi-node layout: two of each role, three NATS nodes with JetStream replicas 3 and the
// js-enabled-only health check, every role instance a Prometheus target of its role's job, every
// job the rules name scraped, nginx's upstreams exactly the api and hub services.
func TestComposeAgreesWithPrometheusAndNginx(t *testing.T) {
	c := loadCompose(t)
	roles := c.roles()
	for _, role := range []string{"api", "hub", "worker"} {
		if len(roles[role]) < 2 {
			t.Errorf("compose runs %v as %s, want at least two instances", roles[role], role)
		}
	}

	// Prometheus: one job per role, whose targets are that role's services on :8080.
	var pc promConfig
	readYAML(t, "prometheus/prometheus.yml", &pc)
	jobs := make(map[string][]string)
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			jobs[sc.JobName] = append(jobs[sc.JobName], st.Targets...)
		}
	}
	for role, services := range roles {
		var want []string
		for _, s := range services {
			want = append(want, s+":8080")
		}
		got := slices.Clone(jobs["livedrops-"+role])
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("prometheus job livedrops-%s scrapes %v, want the compose services %v", role, got, want)
		}
	}
	for job, targets := range jobs {
		for _, tg := range targets {
			host := strings.Split(tg, ":")[0]
			if _, ok := c.Services[host]; !ok && host != "localhost" {
				t.Errorf("prometheus job %s scrapes %s, which is not a compose service", job, tg)
			}
		}
	}
	if got := c.servicesMounting("deploy/prometheus"); !slices.Equal(got, []string{"prometheus"}) {
		t.Errorf("services mounting deploy/prometheus: %v, want [prometheus]", got)
	}
	// The jobs the rules and alerts name are scraped.
	jobRef := regexp.MustCompile(`job\s*(=~|=)\s*"([^"]*)"`)
	for _, file := range []string{"prometheus/rules.yml", "prometheus/alerts.yml"} {
		var rf ruleFile
		readYAML(t, file, &rf)
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				for _, m := range jobRef.FindAllStringSubmatch(r.Expr, -1) {
					re := regexp.MustCompile("^(?:" + m[2] + ")$")
					if m[1] == "=" {
						re = regexp.MustCompile("^" + regexp.QuoteMeta(m[2]) + "$")
					}
					matched := false
					for job := range jobs {
						matched = matched || re.MatchString(job)
					}
					if !matched {
						t.Errorf("%s %s%s: job%s%q matches no scrape job of prometheus.yml (%v)", file, r.Record, r.Alert, m[1], m[2], keys(jobs))
					}
				}
			}
		}
	}

	// nginx: the api and hub upstreams are exactly the compose services of those roles.
	conf, err := os.ReadFile("nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	for upstream, role := range map[string]string{"livedrops_api": "api", "livedrops_hub": "hub"} {
		got := upstreamServers(t, string(conf), upstream)
		var want []string
		for _, s := range roles[role] {
			want = append(want, s+":8080")
		}
		if !slices.Equal(got, want) {
			t.Errorf("nginx upstream %s: %v, want the compose %s services %v", upstream, got, role, want)
		}
	}
	if got := c.servicesMounting("deploy/nginx"); !slices.Equal(got, []string{"nginx"}) {
		t.Errorf("services mounting deploy/nginx: %v, want [nginx]", got)
	}

	// NATS: three nodes of deploy/nats/cluster.conf with the JetStream health check; every role
	// connects to all of them; the stream keeps one replica per node.
	nodes := c.servicesMounting("deploy/nats/cluster.conf")
	if len(nodes) != 3 {
		t.Fatalf("NATS nodes (services mounting deploy/nats/cluster.conf): %v, want 3", nodes)
	}
	for _, n := range nodes {
		if hc := strings.Join(c.Services[n].Healthcheck.Test, " "); !strings.Contains(hc, "/healthz?js-enabled-only=true") {
			t.Errorf("%s health check %q does not ask /healthz?js-enabled-only=true", n, hc)
		}
		if c.Services[n].Environment["SERVER_NAME"] != n {
			t.Errorf("%s: SERVER_NAME %q, want its service name", n, c.Services[n].Environment["SERVER_NAME"])
		}
	}
	routes := natsRoutes(t, nodes[0])
	var wantRoutes []string
	for _, n := range nodes {
		wantRoutes = append(wantRoutes, n+":6222")
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("cluster.conf routes %v, want every NATS service %v", routes, wantRoutes)
	}
	for role, services := range roles {
		for _, s := range services {
			env := c.Services[s].Environment
			var urls []string
			for _, u := range strings.Split(env["NATS_URL"], ",") {
				if pu, err := url.Parse(u); err == nil {
					urls = append(urls, pu.Hostname())
				}
			}
			sort.Strings(urls)
			if !slices.Equal(urls, nodes) {
				t.Errorf("%s (%s): NATS_URL %q, want every node %v", s, role, env["NATS_URL"], nodes)
			}
			if env["LIVEDROPS_STREAM_REPLICAS"] != fmt.Sprint(len(nodes)) {
				t.Errorf("%s: LIVEDROPS_STREAM_REPLICAS %q, want %d", s, env["LIVEDROPS_STREAM_REPLICAS"], len(nodes))
			}
		}
	}
	for _, s := range roles["hub"] {
		if c.Services[s].Environment["GODEBUG"] != "adaptivestackstart=0" {
			t.Errorf("%s: GODEBUG %q, want adaptivestackstart=0 (BENCHMARKS.md, bench-fanout Memory)", s, c.Services[s].Environment["GODEBUG"])
		}
	}
	if got := c.servicesMounting("deploy/grafana"); !slices.Equal(got, []string{"grafana", "grafana"}) {
		t.Errorf("services mounting deploy/grafana: %v, want grafana's provisioning and dashboards", got)
	}
}

func keys(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// upstreamServers lists the server addresses of an nginx upstream block, sorted.
func upstreamServers(t *testing.T, conf, name string) []string {
	t.Helper()
	m := regexp.MustCompile(`(?s)upstream\s+` + name + `\s*\{(.*?)\}`).FindStringSubmatch(conf)
	if m == nil {
		t.Fatalf("nginx.conf has no upstream %s", name)
	}
	var out []string
	for _, s := range regexp.MustCompile(`(?m)^\s*server\s+(\S+)`).FindAllStringSubmatch(m[1], -1) {
		out = append(out, strings.TrimSuffix(s[1], ";"))
	}
	sort.Strings(out)
	return out
}

// natsRoutes parses deploy/nats/cluster.conf with the NATS server's own parser, as node name
// would, checks JetStream and the cluster, and returns its routes as host:port, sorted.
func natsRoutes(t *testing.T, name string) []string {
	t.Helper()
	t.Setenv("SERVER_NAME", name)
	opts, err := server.ProcessConfigFile("nats/cluster.conf")
	if err != nil {
		t.Fatalf("nats/cluster.conf: %v", err)
	}
	if opts.ServerName != name || !opts.JetStream || opts.Cluster.Name == "" || opts.Cluster.Port != 6222 {
		t.Errorf("cluster.conf as %s: server_name %q, jetstream %v, cluster %q port %d", name, opts.ServerName,
			opts.JetStream, opts.Cluster.Name, opts.Cluster.Port)
	}
	if opts.SyncAlways != true {
		t.Errorf("cluster.conf: JetStream does not sync every write")
	}
	var out []string
	for _, r := range opts.Routes {
		out = append(out, r.Host)
	}
	sort.Strings(out)
	return out
}

// The single-node NATS configuration parses as well.
func TestNatsSingleNodeConfig(t *testing.T) {
	opts, err := server.ProcessConfigFile("nats/nats.conf")
	if err != nil {
		t.Fatalf("nats/nats.conf: %v", err)
	}
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("nats.conf: jetstream %v, sync always %v", opts.JetStream, opts.SyncAlways)
	}
}

// nginx -t parses the configuration with the compose service names resolving (in a mount namespace
// of its own whose /etc/hosts names them, as Docker's DNS would), and the configuration does what
// the sockets need.
func TestNginxConfig(t *testing.T) {
	c := loadCompose(t)
	dir := t.TempDir()
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1 localhost\n")
	for name := range c.Services {
		fmt.Fprintf(&hosts, "127.0.0.1 %s\n", name)
	}
	hostsFile := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hostsFile, []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	conf, err := filepath.Abs("nginx/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	nginx := "nginx"
	if _, err := exec.LookPath(nginx); err != nil {
		nginx = "/usr/sbin/nginx"
	}
	out := run(t, "unshare", "--mount", "sh", "-c",
		`mount --bind "$1" /etc/hosts && exec "$2" -t -c "$3" -e stderr -p "$4"`, "sh", hostsFile, nginx, conf, dir)
	if !strings.Contains(out, "test is successful") {
		t.Fatalf("nginx -t: %s", out)
	}

	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	location := func(path string) string {
		m := regexp.MustCompile(`(?s)location\s*=\s*` + regexp.QuoteMeta(path) + `\s*\{(.*?)\}`).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("nginx.conf has no location = %s", path)
		}
		return m[1]
	}
	ws, sse := location("/ws"), location("/events")
	for _, want := range []string{"proxy_http_version 1.1", "proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection $connection_upgrade"} {
		if !strings.Contains(ws, want) {
			t.Errorf("location /ws lacks %q (WebSocket upgrade)", want)
		}
	}
	if !strings.Contains(sse, "proxy_buffering off") {
		t.Error("location /events lacks proxy_buffering off (SSE)")
	}
	// The read timeout must outlast the hub's silence: a ping every 25 s, 15 s for the pong.
	for path, block := range map[string]string{"/ws": ws, "/events": sse} {
		m := regexp.MustCompile(`proxy_read_timeout\s+(\d+)s`).FindStringSubmatch(block)
		if m == nil {
			t.Errorf("location %s sets no proxy_read_timeout (nginx's 60s default is the floor)", path)
			continue
		}
		var secs int
		fmt.Sscan(m[1], &secs)
		if secs <= 25+15 {
			t.Errorf("location %s: proxy_read_timeout %ds, want above the 25 s ping plus 15 s pong wait", path, secs)
		}
	}
	// The access log must not carry ?access_token=: no $request_uri, $args, $query_string or $request.
	for _, lf := range regexp.MustCompile(`(?s)log_format\s+\S+\s+(.*?);`).FindAllStringSubmatch(s, -1) {
		for _, v := range []string{"$request_uri", "$args", "$query_string", "$arg_access_token", "$request "} {
			if strings.Contains(lf[1]+" ", v) {
				t.Errorf("log_format logs %s, which carries ?access_token=", strings.TrimSpace(v))
			}
		}
	}
	if !regexp.MustCompile(`access_log\s+\S+\s+livedrops;`).MatchString(s) {
		t.Error("the access log does not use the livedrops format")
	}
}

// dashboard is the part of the Grafana JSON these tests read.
type dashboard struct {
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/dashboards/livedrops.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("livedrops.json: %v", err)
	}
	return d
}

// The dashboard: the six rows in order, unique panel ids, every panel on the provisioned data source
// with at least one query, inside the 24-column grid and overlapping no other.
func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	var ds struct {
		Datasources []struct {
			UID string `yaml:"uid"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 {
		t.Fatalf("provisioned data sources: %v, want one", ds.Datasources)
	}
	var rows []string
	ids := make(map[int]bool)
	type cell struct{ x, y int }
	used := make(map[cell]string)
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q: gridPos %+v outside the grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := used[cell{x, y}]; ok {
					t.Errorf("panel %q overlaps %q at %d,%d", p.Title, other, x, y)
				}
				used[cell{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != ds.Datasources[0].UID {
			t.Errorf("panel %q: data source %+v, want uid %s", p.Title, p.Datasource, ds.Datasources[0].UID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: target %s has no expr", p.Title, tg.RefID)
			}
		}
	}
	want := []string{"Overview", "Connections", "Delivery", "Orders", "Relay and push", "Runtime", "Hub internals"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows %v, want %v", rows, want)
	}
}
