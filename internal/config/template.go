package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/analyzerd/analyzerd/internal/rollout"
)

// ReadTemplate reads a file holding one analysis template (the keys of one item of the
// configuration's `templates`), decoded strictly as the configuration is (an unknown key is
// an error naming its line and where it is), with the defaults set. It does not validate:
// add it to a configuration's Templates and Validate that, so that it is checked exactly as
// a template of the configuration is (`analyzerd backtest --template-file` does).
func ReadTemplate(path string) (rollout.Template, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return rollout.Template{}, fmt.Errorf("template: %w", err)
	}
	t, err := decodeTemplate(data)
	if err != nil {
		return rollout.Template{}, fmt.Errorf("template %s: %w", path, err)
	}
	return t, nil
}

func decodeTemplate(data []byte) (rollout.Template, error) {
	var t rollout.Template
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&t); err != nil {
		if errors.Is(err, io.EOF) {
			return rollout.Template{}, errEmpty
		}
		var typeErr *yaml.TypeError
		if !errors.As(err, &typeErr) {
			return rollout.Template{}, fmt.Errorf("decode: %w", err)
		}
		errs := make([]error, 0, len(typeErr.Errors))
		for _, msg := range typeErr.Errors {
			if m := unknownKeyLine.FindStringSubmatch(msg); m != nil {
				line, _ := strconv.Atoi(m[1])
				errs = append(errs, unknownKey(data, line, m[2]))
				continue
			}
			errs = append(errs, errors.New(msg))
		}
		return rollout.Template{}, errors.Join(errs...)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return rollout.Template{}, errMultiDoc
	}
	TemplateDefaults(&t)
	return t, nil
}
