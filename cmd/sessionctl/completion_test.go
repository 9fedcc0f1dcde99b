package main

import (
	"context"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCompletionCoversEveryCommand checks that the scripts name every
// registered command and every flag of each, learnt from the commands
// themselves.
func TestCompletionCoversEveryCommand(t *testing.T) {
	specs := commandSpecs()
	if len(specs) != len(commands) {
		t.Fatalf("commandSpecs() = %d commands, want %d", len(specs), len(commands))
	}
	for _, shell := range completionShells {
		code, script, stderr := runCmd(t, "completion", shell)
		if code != exitOK || stderr != "" {
			t.Fatalf("completion %s: exit %d, stderr %q", shell, code, stderr)
		}
		for _, s := range specs {
			if !strings.Contains(script, "\t"+s.name+") ") && !strings.Contains(script, "\t"+s.name+")\n") {
				t.Errorf("completion %s has no case for %s", shell, s.name)
			}
			for _, f := range s.flags {
				if !strings.Contains(script, "-"+f.name) {
					t.Errorf("completion %s lacks %s's flag -%s", shell, s.name, f.name)
				}
			}
		}
	}
	for _, name := range []string{"inspect", "revoke", "revoke-user", "watch", "stats", "doctor", "sign", "backend", "demo", "version"} {
		i := slices.IndexFunc(specs, func(s commandSpec) bool { return s.name == name })
		if i < 0 || !slices.ContainsFunc(specs[i].flags, func(f flagSpec) bool { return f.name == "json" }) {
			t.Errorf("%s has no -json flag", name)
		}
	}
	code, _, stderr := runCmd(t, "completion", "fish")
	if code != exitUsage || stderr != "sessionctl completion: want one shell: bash or zsh\n" {
		t.Errorf("completion fish: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr := runCmd(t, "completion", "bash", "-json")
	if code != exitUsage || stdout != `{"command":"completion","error":"completion prints a shell script: -json does not apply","exit":2}`+"\n" || stderr != "" {
		t.Errorf("completion bash -json: exit %d, stdout %q, stderr %q; want %d and a JSON error", code, stdout, stderr, exitUsage)
	}
}

// TestBashCompletion loads the bash script in bash and asks it to complete
// command names, flags, help's and completion's arguments, and a flag's
// value (left to readline: no candidates).
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash: %v", err)
	}
	_, script, _ := runCmd(t, "completion", "bash")
	tests := []struct {
		words []string // the last one is being completed
		want  string
	}{
		{[]string{"sessionctl", "rev"}, "revoke revoke-user"},
		{[]string{"sessionctl", "revoke", "-js"}, "-json"},
		{[]string{"sessionctl", "revoke", "dev-1", "-back"}, "-backend"},
		{[]string{"sessionctl", "revoke-user", "-pro"}, "-progress"},
		{[]string{"sessionctl", "inspect", "-li"}, "-limit"},
		{[]string{"sessionctl", "help", "ins"}, "inspect"},
		{[]string{"sessionctl", "completion", "z"}, "zsh"},
		{[]string{"sessionctl", "stats", "-redis", ""}, ""},
		{[]string{"sessionctl", "revoke", "-LNc"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.words, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var words strings.Builder
			for _, w := range tt.words {
				words.WriteString(" '" + w + "'")
			}
			prog := script + "\nCOMP_WORDS=(" + words.String() + ")\nCOMP_CWORD=" + strconv.Itoa(len(tt.words)-1) + "\n_sessionctl\necho \"${COMPREPLY[*]}\"\n"
			out, err := exec.CommandContext(ctx, bash, "--norc", "-c", prog).CombinedOutput()
			if err != nil || strings.TrimSuffix(string(out), "\n") != tt.want {
				t.Errorf("completing %q: %q, %v; want %q", tt.words, out, err, tt.want)
			}
		})
	}
}

// TestZshCompletionParses checks the zsh script's syntax with zsh -n, and
// that loading it after compinit registers the function.
func TestZshCompletionParses(t *testing.T) {
	zsh := needTool(t, "zsh")
	_, script, _ := runCmd(t, "completion", "zsh")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, zsh, "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
	prog := "autoload -Uz compinit && compinit -u -D\n" + script + "\nprint -r -- ${_comps[sessionctl]}\n"
	out, err := exec.CommandContext(ctx, zsh, "-f", "-c", prog).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "_sessionctl" {
		t.Errorf("zsh: loading the script registered %q, %v; want _sessionctl", out, err)
	}
}
