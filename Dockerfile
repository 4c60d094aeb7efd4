FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY oscm oscm
COPY feedback feedback
COPY cases cases
COPY actions actions
COPY sample sample
COPY manage.py ./
RUN pip install --no-cache-dir .
RUN SECRET_KEY=build python manage.py collectstatic --no-input
EXPOSE 8000
CMD ["gunicorn", "oscm.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
