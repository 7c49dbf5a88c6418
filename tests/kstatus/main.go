// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus/status, the one Flux and
// Helm 4 wait with) computes for one Kubernetes object, as JSON: {"status": "...", "message": "..."}.
//
//	kstatus < object.json        (or: kstatus object.json; `kubectl get -o json` output works as is)
//
// The object is decoded with unstructured.Unstructured.UnmarshalJSON, as client-go does: a plain json.Decode into a
// map would make metadata.generation a float64, which kstatus rejects.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}

const usage = "usage: kstatus [FILE]  (reads one object as JSON from FILE, or stdin when FILE is absent or -)"

func run() error {
	in := io.Reader(os.Stdin)
	if len(os.Args) == 2 && (os.Args[1] == "-h" || os.Args[1] == "--help") {
		fmt.Println(usage)
		return nil
	}
	if len(os.Args) > 2 {
		return fmt.Errorf("%s", usage)
	}
	if len(os.Args) == 2 && os.Args[1] != "-" {
		f, err := os.Open(os.Args[1])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	data, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	var u unstructured.Unstructured
	if err := u.UnmarshalJSON(data); err != nil {
		return fmt.Errorf("decoding the object: %w", err)
	}
	result, err := status.Compute(&u)
	if err != nil {
		return fmt.Errorf("computing the status: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{
		"status":  result.Status.String(),
		"message": result.Message,
	})
}
