"""Control: pause, resume and revoke any task; expire pauses; recover tasks whose worker died."""
