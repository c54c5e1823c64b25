// Command knative-admission runs Knative's own admission on the deployment's manifests, without a
// cluster: every object is decoded strictly (an unknown or misspelt field is an error, as the API
// server's strict field validation makes it), and each Knative object is defaulted and validated by
// the serving, eventing and eventing-rabbitmq code the webhooks run, with the webhooks' context (config
// stores built from empty ConfigMaps, i.e. the shipped defaults; a create, then a re-apply as an
// update). Errors and warnings both fail. What Knative's validation leaves out (a RabbitmqSource's
// sink and delivery, a Service's response-start and idle timeouts) is checked on its own (gaps.go).
// With -kn-apply, each file is also deployed the way scripts/deploy.sh deploys a function, through
// kn's own apply code (kn.go).
//
// Usage: knative-admission [-kn-apply] [-namespace NS] FILE...
// Prints one line per object checked and one per problem, naming the file, the object and the field
// path; exits 1 if there was any problem, 2 on bad usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	knApply := flag.Bool("kn-apply", false, "also check each Service as `kn service apply NAME --filename FILE --image … --annotation-revision …` (scripts/deploy.sh) makes it, as a create and as an update")
	namespace := flag.String("namespace", "video2mp3", "the namespace scripts/deploy.sh passes to kn")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: knative-admission [-kn-apply] [-namespace NS] FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}

	var problems []problem
	for _, file := range flag.Args() {
		objects, err := readObjects(file)
		if err != nil {
			problems = append(problems, problem{file: file, level: "error", message: err.Error()})
			continue
		}
		for _, obj := range objects {
			found, note := admit(obj)
			report(obj, "", found, note)
			problems = append(problems, found...)
		}
		if *knApply {
			found := admitKnApply(file, objects, *namespace)
			problems = append(problems, found...)
		}
	}

	for _, p := range problems {
		fmt.Fprintln(os.Stderr, p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "knative-admission: %d problem(s)\n", len(problems))
		os.Exit(1)
	}
}

// problem is one error or warning, located by file, object and (in message) field path.
type problem struct {
	file, object, level, message string
}

func (p problem) String() string {
	where := p.file
	if p.object != "" {
		where += ": " + p.object
	}
	return fmt.Sprintf("%s: %s: %s", where, p.level, strings.ReplaceAll(p.message, "\n", "; "))
}

// report prints the object's outcome on stdout: "ok" or how many problems, and what was run.
func report(obj object, phase string, found []problem, note string) {
	status := "ok"
	if strings.HasPrefix(note, "left to ") {
		status = "not checked here"
	} else if len(found) > 0 {
		status = fmt.Sprintf("%d problem(s)", len(found))
	}
	if phase != "" {
		phase = " " + phase
	}
	fmt.Printf("%s: %s%s: %s (%s)\n", obj.file, obj.name(), phase, status, note)
}
