package store

import (
	"encoding/json"
	"time"
)

// User is an account.
type User struct {
	ID    int64  `json:"user_id"`
	Name  string `json:"name"`
	Email string `json:"email"`
}

// NewUser is what POST /users asks for.
type NewUser struct {
	Name  string
	Email string
}

// Validate reports the first invalid field as a *FieldError.
func (u NewUser) Validate() error {
	if err := checkText("name", u.Name, textRule{max: MaxNameLen, required: true}); err != nil {
		return err
	}
	return checkEmail("email", u.Email)
}

// Creator is a user with a public profile; its ID is the user's.
type Creator struct {
	ID            int64  `json:"creator_id"`
	ProfileName   string `json:"profile_name"`
	FollowerCount int64  `json:"follower_count"`
}

// ValidateProfileName checks the profile name of a new creator.
func ValidateProfileName(name string) error {
	return checkText("profile_name", name, textRule{max: MaxProfileNameLen, required: true})
}

// Follower is one entry of a creator's follower list.
type Follower struct {
	UserID     int64
	Name       string
	FollowedAt time.Time
}

// Position is f's place in the newest-first order of the list.
func (f Follower) Position() Cursor { return Cursor{At: f.FollowedAt, ID: f.UserID} }

type followerJSON struct {
	UserID     int64  `json:"user_id"`
	Name       string `json:"name"`
	FollowedAt msTime `json:"followed_at"`
}

// MarshalJSON encodes {user_id,name,followed_at}, the time with milliseconds.
func (f Follower) MarshalJSON() ([]byte, error) {
	return json.Marshal(followerJSON{f.UserID, f.Name, msTime(f.FollowedAt)})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (f *Follower) UnmarshalJSON(b []byte) error {
	var w followerJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*f = Follower{UserID: w.UserID, Name: w.Name, FollowedAt: time.Time(w.FollowedAt)}
	return nil
}

// Following is one entry of the list of creators a user follows.
type Following struct {
	CreatorID   int64
	ProfileName string
	FollowedAt  time.Time
}

// Position is f's place in the newest-first order of the list.
func (f Following) Position() Cursor { return Cursor{At: f.FollowedAt, ID: f.CreatorID} }

type followingJSON struct {
	CreatorID   int64  `json:"creator_id"`
	ProfileName string `json:"profile_name"`
	FollowedAt  msTime `json:"followed_at"`
}

// MarshalJSON encodes {creator_id,profile_name,followed_at}, the time with milliseconds.
func (f Following) MarshalJSON() ([]byte, error) {
	return json.Marshal(followingJSON{f.CreatorID, f.ProfileName, msTime(f.FollowedAt)})
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (f *Following) UnmarshalJSON(b []byte) error {
	var w followingJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*f = Following{CreatorID: w.CreatorID, ProfileName: w.ProfileName, FollowedAt: time.Time(w.FollowedAt)}
	return nil
}
