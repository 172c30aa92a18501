package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
)

// decode types raw, a key's value as viper found it, into dst, a pointer to
// the key's field. raw is a string (flag, environment, config file, default),
// a list of strings (a repeated flag, a YAML sequence or mapping) or a bool
// (a boolean flag, which pflag has already parsed). Every source goes
// through here, so a bad value gets the same message wherever it came from.
func decode(kd kind, raw any, dst any) error {
	switch d := dst.(type) {
	case *[]string:
		*d = list(raw)
		return nil
	case *map[string]string:
		m := map[string]string{}
		for _, kv := range list(raw) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return fmt.Errorf("%q is not key=value", kv)
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		*d = m
		return nil
	}
	s, err := scalar(raw)
	if err != nil {
		return err
	}
	switch d := dst.(type) {
	case *string:
		*d = s
	case *int:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		*d = n
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a boolean: write true or false")
		}
		*d = b
	case *time.Duration:
		v, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("not a duration such as 500ms, 30s or 2m")
		}
		*d = v
	case *zapcore.Level:
		switch l := strings.ToLower(strings.TrimSpace(s)); l {
		case "debug", "info", "warn", "error":
			*d, _ = zapcore.ParseLevel(l)
		default:
			return fmt.Errorf("not debug, info, warn or error")
		}
	default:
		return fmt.Errorf("no decoder for kind %d", kd) // a key table mistake
	}
	return nil
}

// scalar returns a single value as text.
func scalar(raw any) (string, error) {
	switch v := raw.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case []string:
		return "", fmt.Errorf("want one value, got a list")
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("unexpected %T", raw)
}

// list returns a list value: a string is split at commas.
func list(raw any) []string {
	switch v := raw.(type) {
	case string:
		return splitList(v)
	case []string:
		var out []string
		for _, e := range v {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
		return out
	}
	return nil
}

// show quotes a value for a message.
func show(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case []string:
		return strconv.Quote(strings.Join(v, ","))
	case time.Duration:
		return v.String()
	}
	return fmt.Sprint(v)
}
