// composecheck validates a Compose file the way `docker compose config` does, without a Docker engine:
// compose-go (the library docker compose itself uses) interpolates the variables, validates the
// result against the Compose Specification's JSON schema (embedded in compose-go), and checks the
// model (depends_on targets, profiles, volumes, ...). Every profile is enabled, so nothing is skipped.
//
//	composecheck [-env KEY=VALUE]... [-json OUT] FILE [OVERRIDE]...
//
// Several files are merged in order, as `docker compose -f FILE -f OVERRIDE` merges them.
// With -json, the resolved project (variables interpolated, defaults applied) is written to OUT, for
// checks of what the services will actually receive.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type envFlags []string

func (e *envFlags) String() string     { return strings.Join(*e, ",") }
func (e *envFlags) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var env envFlags
	flag.Var(&env, "env", "KEY=VALUE for interpolation (repeatable); the process environment is not used")
	out := flag.String("json", "", "write the resolved project as JSON to this file")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-env KEY=VALUE]... [-json OUT] FILE [OVERRIDE]...")
		os.Exit(2)
	}
	var files []string
	for _, arg := range flag.Args() {
		file, err := filepath.Abs(arg)
		if err != nil {
			fail(err)
		}
		files = append(files, file)
	}
	options, err := cli.NewProjectOptions(
		files,
		cli.WithWorkingDirectory(filepath.Dir(files[0])),
		cli.WithEnv(env),
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	if *out != "" {
		data, err := project.MarshalJSON()
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			fail(err)
		}
	}
	names := project.ServiceNames()
	sort.Strings(names)
	fmt.Printf("%s: valid (project %q, services: %s)\n", strings.Join(flag.Args(), " + "), project.Name, strings.Join(names, ", "))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
	os.Exit(1)
}
