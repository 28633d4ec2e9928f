"""Data preparation: conversion, archives, splitting, sample data."""
