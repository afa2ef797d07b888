"""The Collect Tasks services: upload, export, control, and the gateway composing their HTTP resources."""
