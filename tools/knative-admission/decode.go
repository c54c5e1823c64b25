package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// object is one document of a manifest file, as JSON.
type object struct {
	file string
	gvk  schema.GroupVersionKind
	meta struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	json []byte
}

func (o object) name() string {
	name := o.gvk.Kind + "/" + o.meta.Name
	if o.meta.Namespace != "" {
		name = o.meta.Namespace + "/" + name
	}
	return name
}

// readObjects splits a file into its YAML documents (empty ones skipped). A duplicated key is an
// error here, as it is for the API server.
func readObjects(file string) ([]object, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objects []object
	for i := 1; ; i++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		} else if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj := object{file: file, json: js}
		obj.meta.Name, obj.meta.Namespace = head.Metadata.Name, head.Metadata.Namespace
		gv, err := schema.ParseGroupVersion(head.APIVersion)
		if err != nil || head.Kind == "" {
			return nil, fmt.Errorf("document %d: apiVersion %q and kind %q do not name a kind", i, head.APIVersion, head.Kind)
		}
		obj.gvk = gv.WithKind(head.Kind)
		objects = append(objects, obj)
	}
}

// decodeStrict decodes the object into target the way the API server does with strict field
// validation: field names are case-sensitive and an unknown or duplicated field is an error (the
// webhooks' own decoder skips metadata, and kn's ignores unknown fields altogether).
func decodeStrict(obj object, target any) []problem {
	strictErrs, err := kjson.UnmarshalStrict(obj.json, target)
	if err != nil {
		return []problem{{file: obj.file, object: obj.name(), level: "error", message: "decoding: " + err.Error()}}
	}
	var found []problem
	for _, e := range strictErrs {
		found = append(found, problem{file: obj.file, object: obj.name(), level: "error", message: e.Error()})
	}
	return found
}
