// Command mkimage writes a single-layer OCI image layout as a tar archive,
// ready for `ctr images import`, without a container engine or a registry.
//
//	mkimage -o out.tar -name registry/repo:tag [-name ...] \
//	    -entrypoint '["/bin/app"]' [-cmd '["arg"]'] [-env K=V ...] [-user 65532] [-workdir /] \
//	    [-add SRC:DST[:MODE] ...] [-mkdir DST[:MODE] ...] [-link DST:TARGET ...]
//
// Each -name becomes one index entry carrying the io.containerd.image.name
// annotation, which is how containerd names an imported image. All timestamps
// are zero so the same inputs give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    map[string]string `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type entry struct {
	name   string
	mode   int64
	typ    byte
	data   []byte
	target string
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mkimage: "+format+"\n", args...)
	os.Exit(1)
}

func parseMode(s string, def int64) int64 {
	if s == "" {
		return def
	}
	m, err := strconv.ParseInt(s, 8, 64)
	if err != nil {
		fail("bad mode %q: %v", s, err)
	}
	return m
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func main() {
	var names, envs, adds, dirs, links multi
	out := flag.String("o", "", "output tar")
	entrypoint := flag.String("entrypoint", "", "JSON array")
	cmd := flag.String("cmd", "", "JSON array")
	user := flag.String("user", "", "user[:group]")
	workdir := flag.String("workdir", "/", "working directory")
	flag.Var(&names, "name", "image reference (repeatable)")
	flag.Var(&envs, "env", "K=V (repeatable)")
	flag.Var(&adds, "add", "SRC:DST[:MODE] (repeatable)")
	flag.Var(&dirs, "mkdir", "DST[:MODE] (repeatable)")
	flag.Var(&links, "link", "DST:TARGET symlink (repeatable)")
	flag.Parse()
	if *out == "" || len(names) == 0 {
		fail("-o and at least one -name are required")
	}

	files := map[string]entry{}
	addDir := func(p string, mode int64) {
		p = strings.Trim(path.Clean("/"+p), "/")
		if p == "" {
			return
		}
		if _, ok := files[p]; !ok || mode != 0o755 {
			files[p] = entry{name: p, mode: mode, typ: tar.TypeDir}
		}
	}
	parents := func(p string) {
		for d := path.Dir(p); d != "." && d != "/" && d != ""; d = path.Dir(d) {
			if _, ok := files[d]; !ok {
				addDir(d, 0o755)
			}
		}
	}
	for _, d := range []string{"tmp:1777", "etc", "dev", "proc", "sys", "var", "run"} {
		n, m, _ := strings.Cut(d, ":")
		addDir(n, parseMode(m, 0o755))
	}
	for _, d := range dirs {
		n, m, _ := strings.Cut(d, ":")
		n = strings.Trim(path.Clean("/"+n), "/")
		parents(n)
		addDir(n, parseMode(m, 0o755))
	}
	for _, a := range adds {
		parts := strings.SplitN(a, ":", 3)
		if len(parts) < 2 {
			fail("bad -add %q", a)
		}
		data, err := os.ReadFile(parts[0])
		if err != nil {
			fail("%v", err)
		}
		dst := strings.Trim(path.Clean("/"+parts[1]), "/")
		mode := int64(0o755)
		if len(parts) == 3 {
			mode = parseMode(parts[2], 0o755)
		}
		parents(dst)
		files[dst] = entry{name: dst, mode: mode, typ: tar.TypeReg, data: data}
	}
	for _, l := range links {
		dst, target, ok := strings.Cut(l, ":")
		if !ok {
			fail("bad -link %q", l)
		}
		dst = strings.Trim(path.Clean("/"+dst), "/")
		parents(dst)
		files[dst] = entry{name: dst, mode: 0o777, typ: tar.TypeSymlink, target: target}
	}
	// Minimal user database so that numeric and named users resolve.
	for p, text := range map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
		"etc/group":         "root:x:0:\nnonroot:x:65532:\nnobody:x:65534:\n",
		"etc/nsswitch.conf": "hosts: files dns\n",
	} {
		if _, ok := files[p]; !ok {
			files[p] = entry{name: p, mode: 0o644, typ: tar.TypeReg, data: []byte(text)}
		}
	}

	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	zero := time.Unix(0, 0)
	for _, k := range keys {
		e := files[k]
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: e.typ, ModTime: zero, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		case tar.TypeSymlink:
			h.Linkname = e.target
		}
		if err := tw.WriteHeader(h); err != nil {
			fail("%v", err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				fail("%v", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		fail("%v", err)
	}
	diffID := digestOf(layer.Bytes())
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	zw.Write(layer.Bytes())
	zw.Close()

	cfg := map[string]any{"WorkingDir": *workdir}
	if len(envs) == 0 {
		envs = append(envs, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	cfg["Env"] = []string(envs)
	if *user != "" {
		cfg["User"] = *user
	}
	for key, raw := range map[string]string{"Entrypoint": *entrypoint, "Cmd": *cmd} {
		if raw == "" {
			continue
		}
		var v []string
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			fail("-%s: %v", strings.ToLower(key), err)
		}
		cfg[key] = v
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history":      []map[string]string{{"created_by": "mkimage"}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digestOf(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digestOf(gz.Bytes()), Size: int64(gz.Len())}},
	})
	var index []descriptor
	for _, n := range names {
		tag := n[strings.LastIndex(n, ":")+1:]
		index = append(index, descriptor{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digestOf(manifest), Size: int64(len(manifest)),
			Platform:    map[string]string{"architecture": "amd64", "os": "linux"},
			Annotations: map[string]string{"io.containerd.image.name": n, "org.opencontainers.image.ref.name": tag},
		})
	}
	indexJSON, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index})

	f, err := os.Create(*out + ".tmp")
	if err != nil {
		fail("%v", err)
	}
	ow := tar.NewWriter(f)
	put := func(name string, data []byte) {
		if err := ow.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: zero, Typeflag: tar.TypeReg}); err != nil {
			fail("%v", err)
		}
		if _, err := ow.Write(data); err != nil {
			fail("%v", err)
		}
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", indexJSON)
	for _, b := range [][]byte{config, manifest, gz.Bytes()} {
		put("blobs/sha256/"+strings.TrimPrefix(digestOf(b), "sha256:"), b)
	}
	if err := ow.Close(); err != nil {
		fail("%v", err)
	}
	if err := f.Close(); err != nil {
		fail("%v", err)
	}
	if err := os.Rename(*out+".tmp", *out); err != nil {
		fail("%v", err)
	}
	fmt.Printf("%s %s\n", *out, digestOf(manifest))
}
