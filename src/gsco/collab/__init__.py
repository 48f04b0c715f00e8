"""GSCo's collaboration: specialists' predictions (MoED) and retrieved similar cases (RAD) written into the
generalist's prompt."""
