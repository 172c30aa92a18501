package standin

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// entry is one file, directory or symlink of a layer. Paths have no leading
// slash, as in the layers that registries serve.
type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	data     []byte
	hostPath string // regular file read from the host when data is nil
	link     string
}

// tree collects a layer's entries; write emits them sorted by name with
// every header field fixed, so the same inputs give the same bytes.
type tree map[string]entry

func (t tree) dir(name string, mode int64, uid, gid int) {
	t[name] = entry{name: name, typ: tar.TypeDir, mode: mode, uid: uid, gid: gid}
}

func (t tree) file(name string, mode int64, data []byte) {
	t.parents(name)
	t[name] = entry{name: name, typ: tar.TypeReg, mode: mode, data: data}
}

func (t tree) symlink(name, target string) {
	t.parents(name)
	t[name] = entry{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}

// parents adds root-owned 0755 directories for every missing parent.
func (t tree) parents(name string) {
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t.dir(d, 0o755, 0, 0)
		}
	}
}

// copyHost adds the host directory src under dst, root-owned, keeping only
// the permission bits of each file (no host owners, times or xattrs).
func (t tree) copyHost(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		name := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := int64(info.Mode().Perm())
		switch {
		case d.IsDir():
			t.parents(name)
			t.dir(name, perm, 0, 0)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			t.symlink(name, target)
		case info.Mode().IsRegular():
			t.parents(name)
			t[name] = entry{name: name, typ: tar.TypeReg, mode: perm, hostPath: p}
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, info.Mode().Type())
		}
		return nil
	})
}

// write emits the tar stream. Directories get a trailing slash, every time
// is the zero Unix time, and no user or group names are written.
func (t tree) write(w io.Writer) error {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tar.NewWriter(w)
	for _, n := range names {
		e := t[n]
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Linkname: e.link,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		data := e.data
		if e.typ == tar.TypeReg && data == nil && e.hostPath != "" {
			b, err := os.ReadFile(e.hostPath)
			if err != nil {
				return err
			}
			data = b
		}
		if e.typ == tar.TypeDir && !strings.HasSuffix(h.Name, "/") {
			h.Name += "/"
		}
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("tar %s: %w", n, err)
		}
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("tar %s: %w", n, err)
		}
	}
	return tw.Close()
}

func (t tree) bytes() ([]byte, error) {
	var b bytes.Buffer
	err := t.write(&b)
	return b.Bytes(), err
}
