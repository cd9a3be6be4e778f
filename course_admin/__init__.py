"""Instructor tools: the notebook builder (`python -m course_admin.notebooks`) and the grader
(`course-grade`). Not for students: `course_lib` never imports this package; it imports `course_lib`."""
