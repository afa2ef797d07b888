"""The dashboard: a single page (plain HTML, CSS and JavaScript in static/, no build step) that drives the
public API with the signed-in user's API key. The gateway serves it at `/` and its files under
/dashboard/assets/; the page talks to nothing but this app."""
