package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The node as a service: `contribute --install-service` writes a systemd
// user unit (Linux) or a launchd agent (macOS) that runs this binary's
// contribute with the same flags at login, and says how to start it and
// where its logs go. It starts nothing itself.

// serviceArgs are the contribute arguments to put in the service: the
// ones given, without --install-service.
func serviceArgs(args []string) []string {
	var out []string
	for _, a := range args {
		if a == "--install-service" || a == "-install-service" || strings.HasPrefix(a, "--install-service=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// systemdUnit is the user unit for a node.
func systemdUnit(exe string, args []string) string {
	var b strings.Builder
	b.WriteString("[Unit]\n")
	b.WriteString("Description=IdleClaw node: lends this machine's Ollama models to the network\n")
	b.WriteString("Documentation=https://github.com/idleclaw/idleclaw\n")
	b.WriteString("After=network-online.target\nWants=network-online.target\n\n")
	b.WriteString("[Service]\nType=simple\n")
	fmt.Fprintf(&b, "ExecStart=%s\n", systemdQuote(append([]string{exe, "contribute"}, args...)))
	b.WriteString("Restart=on-failure\nRestartSec=10\n")
	b.WriteString("# SIGTERM lets requests in flight finish (--drain-grace, 30s by default).\n")
	b.WriteString("KillSignal=SIGTERM\nTimeoutStopSec=45\n\n")
	b.WriteString("[Install]\nWantedBy=default.target\n")
	return b.String()
}

// systemdQuote joins a command line, quoting what systemd would split.
func systemdQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'\\$%;") {
			r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", "$$", "%", "%%")
			out[i] = `"` + r.Replace(a) + `"`
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}

// launchdPlist is the launchd agent for a node.
func launchdPlist(exe string, args []string, logDir string) string {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	b.WriteString("  <key>Label</key><string>com.idleclaw.contribute</string>\n")
	b.WriteString("  <key>ProgramArguments</key>\n  <array>\n")
	for _, a := range append([]string{exe, "contribute"}, args...) {
		fmt.Fprintf(&b, "    <string>%s</string>\n", esc.Replace(a))
	}
	b.WriteString("  </array>\n")
	b.WriteString("  <key>RunAtLoad</key><true/>\n  <key>KeepAlive</key><true/>\n")
	fmt.Fprintf(&b, "  <key>StandardOutPath</key><string>%s</string>\n", esc.Replace(filepath.Join(logDir, "contribute.log")))
	fmt.Fprintf(&b, "  <key>StandardErrorPath</key><string>%s</string>\n", esc.Replace(filepath.Join(logDir, "contribute.log")))
	b.WriteString("</dict>\n</plist>\n")
	return b.String()
}

// installService writes the service file for goos ("linux" or "darwin")
// under home and returns what to tell the owner.
func installService(goos, home, exe string, args []string) (path, explain string, err error) {
	if home == "" {
		return "", "", fmt.Errorf("install service: no HOME")
	}
	var content string
	switch goos {
	case "linux":
		path = filepath.Join(home, ".config", "systemd", "user", "idleclaw-contribute.service")
		content = systemdUnit(exe, args)
		explain = "start it now and at every login:\n" +
			"  systemctl --user daemon-reload\n" +
			"  systemctl --user enable --now idleclaw-contribute\n" +
			"its log:   journalctl --user -u idleclaw-contribute -f\n" +
			"its state: idleclaw contribute status\n" +
			"(to keep it running while you are logged out: loginctl enable-linger $USER)"
	case "darwin":
		logDir := filepath.Join(home, "Library", "Logs", "idleclaw")
		path = filepath.Join(home, "Library", "LaunchAgents", "com.idleclaw.contribute.plist")
		content = launchdPlist(exe, args, logDir)
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return "", "", fmt.Errorf("install service: %w", err)
		}
		explain = "start it now and at every login:\n" +
			"  launchctl load -w " + path + "\n" +
			"its log:   " + filepath.Join(logDir, "contribute.log") + "\n" +
			"its state: idleclaw contribute status"
	default:
		return "", "", fmt.Errorf("install service: no service manager known for %s (run `idleclaw contribute` under yours)", goos)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", "", fmt.Errorf("install service: %w", err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return "", "", fmt.Errorf("install service: %w", err)
	}
	return path, explain, nil
}
