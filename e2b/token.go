package e2b

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// A page token is opaque to clients: base64url of {"o": offset}.
type pageToken struct {
	Offset int `json:"o"`
}

func encodeToken(offset int) string {
	b, _ := json.Marshal(pageToken{Offset: offset})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return 0, errors.New("invalid nextToken")
	}
	var t pageToken
	if err := json.Unmarshal(b, &t); err != nil || t.Offset < 0 {
		return 0, errors.New("invalid nextToken")
	}
	return t.Offset, nil
}
